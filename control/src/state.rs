//! What every handler can reach: the store, the keys, the settings, the
//! caches and the notifier of this replica.

use crate::keys::Keys;
use crate::metrics::Metrics;
use crate::store::Store;
use std::sync::Arc;

/// Everything a handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub keys: Keys,
    pub settings: Arc<crate::Settings>,
    pub metrics: Arc<Metrics>,
    /// Wakes long-polls on this replica when an approval changes (other
    /// replicas' changes are seen by polling the store).
    pub approvals_changed: Arc<tokio::sync::Notify>,
    pub bundles: Arc<crate::bundles::Cache>,
    pub notify: Arc<crate::notify::Notifier>,
}
