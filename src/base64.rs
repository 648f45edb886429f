//! Base64 (RFC 4648 §4, with padding) for SASL payloads and PEM. (SKELETON: sasl helper)
