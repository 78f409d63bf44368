//! `tlsgate-control`: the control plane of the appliance.
//!
//! What it will hold (control-plane issue): the `tlsgate-control` daemon (state
//! directory with trust store, decryption CA, licenses and versioned policy; the
//! control socket; the event-ring consumer writing `tls_proxy.log` and a JSON event
//! log; the Prometheus exporter) and its client `tlsgatectl`.
//!
//! It talks to the dataplane only through [`tlsgate_api`]: today the dataplane answers
//! the same request/response messages on its own status socket
//! (`tlsgate-dataplane` `status_socket`); the control-plane issue turns that into one
//! two-way connection that the dataplane opens to the control socket.

#![forbid(unsafe_code)]
