//! Registry client for ferry's upstreams: token challenge, credentials, accounts, mirrors, redirects
