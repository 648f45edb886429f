//! The mio driver: the only code that touches sockets, signals or the clock.
//! (SKELETON: the net helper writes it.)

use std::sync::Arc;

use crate::config::Config;
use crate::server::Server;
use crate::tls::TlsConfigs;

/// Runs the event loop until SIGTERM/SIGINT, then shuts down gracefully.
pub fn run(_config: Arc<Config>, _server: Server, _tls: TlsConfigs) -> std::io::Result<()> {
    todo!("net helper")
}
