//! One validated configuration for every client a manager builds: the [`Builder`]
//! (setters), the resolved [`Config`], and the validation between them.

mod builder;
mod proxy;
mod settings;
mod validate;

pub use builder::Builder;
pub use proxy::Proxy;
#[cfg(feature = "reqwest")]
pub(crate) use proxy::env_rule;
pub(crate) use settings::Config;
