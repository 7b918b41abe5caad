//! `trellis-identity-client`: the proxy side of identity — generates the private key in memory, requests certificates from `trellis-identity` and renews them.
