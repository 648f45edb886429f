//! DNS resolution for federation (SKELETON: the dns helper writes it).
