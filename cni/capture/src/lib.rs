//! `trellis-capture`: the capture-rule plan (a pure function of the capture configuration) and its application with `iptables-restore` or `nft`; shared by `trellis-cni` and `trellis-proxy init`.
