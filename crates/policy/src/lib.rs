//! SafeGate's policy: the model of `config/policy.toml` (categories, roles, groups,
//! rules, time windows, unblocks), its compilation into an immutable `Snapshot`, and
//! `Snapshot::decide`, the one function the proxy and `safegate check` call.
