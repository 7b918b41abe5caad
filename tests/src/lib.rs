//! `trellis-sandbox`: a real Trellis mesh on one Linux host, in network namespaces.
