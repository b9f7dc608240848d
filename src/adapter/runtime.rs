//! What the Workers runtime gives every other module: its clock and its
//! randomness. Here, at the bottom of the adapter, so that anything may
//! read the time without depending on the entry points above it.

/// Milliseconds since the Unix epoch, from the runtime's clock.
pub(crate) fn now_ms() -> u64 {
    worker::Date::now().as_millis()
}

/// A fresh unguessable identifier (128 bits, hex).
pub(crate) fn random_id() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes)?;
    Ok(crate::core::auth::encode_hex(&bytes))
}
