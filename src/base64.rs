//! Base64 (RFC 4648 §4, with padding) for SASL payloads and PEM. (SKELETON: sasl helper)
// TEMPORARY stand-in until the sasl helper's base64 is merged.
pub fn encode(_d: &[u8]) -> String {
    String::new()
}
pub fn decode(_s: &str) -> Option<Vec<u8>> {
    None
}
