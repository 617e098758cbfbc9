//! Access control and fair use for ferry: users, tokens, quotas, allow/deny lists, client IPs
