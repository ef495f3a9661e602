//! The built-in `default` driver: no registry, plain `host:port/pkg.Service/Method` URIs
//! and the built-in `direct://` scheme.

use async_trait::async_trait;

use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::parse::{ServerMethod, parse_plain, parse_scheme_url};
use crate::registration::Registration;

/// The name of the built-in driver.
pub const NAME: &str = "default";

/// The driver in use when none was chosen: it registers nothing and parses URIs with
/// [`parse_plain`]. Dialling still works for plain addresses and `direct://` targets.
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultDriver;

#[async_trait]
impl Driver for DefaultDriver {
    fn name(&self) -> &str {
        NAME
    }

    /// An empty target registers nothing, as in Go. Go also silently ignores a
    /// non-empty one; that hides a missing driver, so here it is an error.
    async fn register_service(&self, target: &str, endpoint: &str) -> Result<Registration> {
        if target.is_empty() {
            return Ok(Registration::noop(target, endpoint));
        }
        Err(Error::Unsupported {
            driver: NAME.to_string(),
            what: "register a service at",
            target: target.to_string(),
            reason: "the default driver has no registry; call use_driver(\"dtm-driver-gozero\") \
                     (or another driver) first, or set MicroService.Driver"
                .to_string(),
        })
    }

    /// Go's rule ([`parse_plain`]), plus the built-in `direct://` scheme, which needs
    /// no registry: `direct:///127.0.0.1:2006/pb.Wallet/DeductBalance`.
    fn parse_server_method(&self, uri: &str) -> Result<ServerMethod> {
        if uri.starts_with("direct://") {
            return parse_scheme_url(uri);
        }
        parse_plain(uri)
    }
}
