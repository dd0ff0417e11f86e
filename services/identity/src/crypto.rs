//! The one crypto provider, ring: aws-lc-rs (rustls's default) needs cmake to build.

use std::sync::{Arc, LazyLock};

use rustls::crypto::CryptoProvider;

/// rustls 0.23.48 deprecates ring's provider because it has no post-quantum key exchange;
/// ring is still the provider that builds everywhere Weft does, so the warning stops here.
#[allow(deprecated)]
static PROVIDER: LazyLock<Arc<CryptoProvider>> =
    LazyLock::new(|| Arc::new(rustls::crypto::ring::default_provider()));

pub(crate) fn provider() -> Arc<CryptoProvider> {
    PROVIDER.clone()
}
