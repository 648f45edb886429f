//! Self-signed certificates for domains without a configured one. (SKELETON)
