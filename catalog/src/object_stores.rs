//! Object stores: `file://`, `s3://`, `az://`/`abfss://` and `gs://`
//! locations, with credentials and endpoints from a table's OPTIONS or the
//! environment.
//!
//! One [`StoreRegistry`] serves DataFusion's scans (it is the runtime's
//! object store registry) and delta-rs' (through the factories
//! [`register_delta_factories`] installs), and both get the same client for
//! the same store and settings: clients are built once and shared, never
//! one per query or per task.
//!
//! Executors hold a registry too. A store they have not seen is fetched
//! from the coordinator the first time a task touches it (over the signed
//! cluster channel), and again every [`SETTINGS_TTL`], so credentials given
//! in a table's OPTIONS or a storage credential work on every executor
//! without being in the plan or in any log.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::ops::Range;
use std::sync::{Arc, Mutex, Once, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::object_store::ObjectStoreRegistry;
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};
use url::Url;

use crate::error::{CatalogError, Result};

/// URL schemes of the cloud object stores Loch reads and writes.
pub const CLOUD_SCHEMES: [&str; 8] = ["s3", "s3a", "gs", "az", "adl", "azure", "abfs", "abfss"];

/// The table option that names a storage credential: a storage setting
/// (it stands for some), never a format option.
pub const CREDENTIAL_OPTION: &str = "credential";

/// Settings of one store: object_store's configuration keys
/// (`aws_endpoint`, `azure_storage_account_key`, `google_base_url`, …).
pub type StoreOptions = BTreeMap<String, String>;

/// Asks the coordinator for the settings of a store (by its key,
/// `scheme://authority`): what executors use for stores they have not seen.
pub type FetchOptions = Arc<
    dyn Fn(String) -> BoxFuture<'static, std::result::Result<StoreOptions, String>> + Send + Sync,
>;

/// True for `s3://`, `gs://`, `az://`, … locations.
pub fn is_cloud(url: &Url) -> bool {
    CLOUD_SCHEMES.contains(&url.scheme())
}

/// `scheme://authority`: what one store (one bucket or container) is known
/// by.
pub fn store_key(url: &Url) -> String {
    format!("{}://{}", url.scheme(), url.authority())
}

/// An option key as object_store spells it: lower case, `aws.region`
/// (DataFusion CLI's spelling) as `aws_region`, and without the `format.`
/// DataFusion puts before keys that have no namespace.
fn normalize_key(key: &str) -> String {
    let key = key.trim().to_ascii_lowercase();
    let key = key.strip_prefix("format.").unwrap_or(&key);
    key.replace('.', "_")
}

/// True for a storage setting (credentials, endpoint, region, …, or the
/// name of a storage credential) rather than a format option.
pub fn is_storage_option(key: &str) -> bool {
    let key = normalize_key(key);
    key == CREDENTIAL_OPTION
        || ["aws_", "azure_", "google_", "object_store_"]
            .iter()
            .any(|p| key.starts_with(p))
}

/// Splits table OPTIONS into storage settings (normalized keys) and the
/// rest (format options, passed on as given).
pub fn split_options(
    options: &BTreeMap<String, String>,
) -> (StoreOptions, BTreeMap<String, String>) {
    let mut storage = StoreOptions::new();
    let mut format = BTreeMap::new();
    for (k, v) in options {
        if is_storage_option(k) {
            storage.insert(normalize_key(k), v.clone());
        } else {
            format.insert(k.clone(), v.clone());
        }
    }
    (storage, format)
}

/// The storage settings in the environment (`AWS_ACCESS_KEY_ID`,
/// `AZURE_STORAGE_ACCOUNT_NAME`, `GOOGLE_SERVICE_ACCOUNT`, …).
fn environment() -> StoreOptions {
    std::env::vars()
        .filter(|(k, _)| is_storage_option(k) && normalize_key(k) != CREDENTIAL_OPTION)
        .map(|(k, v)| (normalize_key(&k), v))
        .collect()
}

/// Clients by (store key, hash of its settings).
type Clients = Mutex<HashMap<(String, u64), Arc<dyn ObjectStore>>>;

/// Clients by store key and settings: the same store with the same
/// settings is one client, whoever asks (DataFusion or delta-rs).
fn clients() -> &'static Clients {
    static CLIENTS: std::sync::OnceLock<Clients> = std::sync::OnceLock::new();
    CLIENTS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The client of the store `url` is in, with `options` over the
/// environment's settings; built once per store and settings.
pub fn client(url: &Url, options: &StoreOptions) -> Result<Arc<dyn ObjectStore>> {
    let mut settings = environment();
    settings.extend(options.iter().map(|(k, v)| (normalize_key(k), v.clone())));
    let key = store_key(url);
    let mut hasher = DefaultHasher::new();
    settings.hash(&mut hasher);
    let id = (key.clone(), hasher.finish());
    if let Some(hit) = clients().lock().ok().and_then(|c| c.get(&id).cloned()) {
        return Ok(hit);
    }
    let root =
        Url::parse(&format!("{key}/")).map_err(|e| CatalogError::Invalid(format!("{url}: {e}")))?;
    let (store, _) = object_store::parse_url_opts(&root, settings)
        .map_err(|e| CatalogError::Invalid(format!("object store for {key}: {e}")))?;
    let store: Arc<dyn ObjectStore> = Arc::from(store);
    if let Ok(mut c) = clients().lock() {
        c.insert(id, Arc::clone(&store));
    }
    Ok(store)
}

/// DataFusion's object store registry for Loch: local files, stores
/// configured by tables, and on demand the others (from the environment, or
/// on an executor from the coordinator).
pub struct StoreRegistry {
    local: Arc<dyn ObjectStore>,
    stores: RwLock<HashMap<String, Arc<dyn ObjectStore>>>,
    /// Settings given for each store (table OPTIONS), what executors fetch.
    settings: RwLock<HashMap<String, StoreOptions>>,
    fetch: Option<FetchOptions>,
}

impl fmt::Debug for StoreRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Store names only: settings hold secrets.
        let names: Vec<String> = self
            .stores
            .read()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("StoreRegistry")
            .field("stores", &names)
            .finish()
    }
}

impl Default for StoreRegistry {
    fn default() -> Self {
        StoreRegistry {
            local: Arc::new(LocalFileSystem::new()),
            stores: RwLock::new(HashMap::new()),
            settings: RwLock::new(HashMap::new()),
            fetch: None,
        }
    }
}

impl StoreRegistry {
    /// A registry that asks `fetch` for the settings of stores it has not
    /// seen (an executor's).
    pub fn with_fetch(fetch: FetchOptions) -> Self {
        StoreRegistry {
            fetch: Some(fetch),
            ..Default::default()
        }
    }

    /// Makes the store of `url` use `options` (a table's storage OPTIONS)
    /// from now on. No-op for local paths.
    pub fn configure(&self, url: &Url, options: &StoreOptions) -> Result<()> {
        if !is_cloud(url) {
            return Ok(());
        }
        let key = store_key(url);
        // Every statement over a cloud table comes here: when the store
        // already has these settings, there is nothing to build or swap.
        let same = self
            .settings
            .read()
            .is_ok_and(|s| s.get(&key) == Some(options));
        if same {
            return Ok(());
        }
        let store = client(url, options)?;
        if let Ok(mut stores) = self.stores.write() {
            stores.insert(key.clone(), store);
        }
        if let Ok(mut settings) = self.settings.write() {
            settings.insert(key, options.clone());
        }
        Ok(())
    }

    /// The settings tables gave the store `key` (for an executor asking).
    pub fn settings(&self, key: &str) -> Option<StoreOptions> {
        self.settings.read().ok()?.get(key).cloned()
    }
}

impl ObjectStoreRegistry for StoreRegistry {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.stores.write().ok()?.insert(store_key(url), store)
    }

    fn deregister_store(&self, url: &Url) -> DfResult<Arc<dyn ObjectStore>> {
        self.stores
            .write()
            .ok()
            .and_then(|mut s| s.remove(&store_key(url)))
            .ok_or_else(|| DataFusionError::Internal(format!("no object store for {url}")))
    }

    fn get_store(&self, url: &Url) -> DfResult<Arc<dyn ObjectStore>> {
        let key = store_key(url);
        if let Some(hit) = self.stores.read().ok().and_then(|s| s.get(&key).cloned()) {
            return Ok(hit);
        }
        if url.scheme() == "file" {
            return Ok(Arc::clone(&self.local));
        }
        let parsed = Url::parse(&format!("{key}/"))
            .map_err(|e| DataFusionError::Configuration(format!("{url}: {e}")))?;
        if !is_cloud(&parsed) {
            return Err(DataFusionError::Configuration(format!(
                "no object store for {key} (Loch reads file://, s3://, gs://, az:// and abfss:// locations)"
            )));
        }
        let store: Arc<dyn ObjectStore> = match &self.fetch {
            Some(fetch) => Arc::new(FetchedStore {
                url: parsed,
                fetch: Arc::clone(fetch),
                inner: Arc::new(Mutex::new(None)),
            }),
            None => client(&parsed, &StoreOptions::new())
                .map_err(|e| DataFusionError::External(Box::new(e)))?,
        };
        if let Ok(mut stores) = self.stores.write() {
            // Another task may have raced us here: keep the first.
            return Ok(Arc::clone(stores.entry(key).or_insert(store)));
        }
        Ok(store)
    }
}

/// delta-rs' object stores for the cloud schemes: the same clients as
/// DataFusion's, with delta-rs' plain log store (commits by conditional
/// PUT: S3's `If-None-Match`, Azure's and GCS's preconditions, so two
/// writers never both write a version).
pub fn register_delta_factories() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let stores = deltalake::logstore::object_store_factories();
        let logs = deltalake::logstore::logstore_factories();
        for scheme in CLOUD_SCHEMES {
            let Ok(url) = Url::parse(&format!("{scheme}://")) else {
                continue;
            };
            stores.insert(url.clone(), Arc::new(DeltaStores));
            logs.insert(url, Arc::new(DeltaLogs));
        }
    });
}

struct DeltaStores;

impl deltalake::logstore::ObjectStoreFactory for DeltaStores {
    fn parse_url_opts(
        &self,
        url: &Url,
        config: &deltalake::logstore::StorageConfig,
    ) -> deltalake::DeltaResult<(deltalake::logstore::ObjectStoreRef, Path)> {
        let options: StoreOptions = config
            .raw
            .iter()
            .filter(|(k, _)| is_storage_option(k))
            .map(|(k, v)| (normalize_key(k), v.clone()))
            .collect();
        let store = client(url, &options)
            .map_err(|e| deltalake::DeltaTableError::Generic(e.to_string()))?;
        let path = Path::from_url_path(url.path())
            .map_err(|e| deltalake::DeltaTableError::Generic(e.to_string()))?;
        Ok((store, path))
    }
}

struct DeltaLogs;

impl deltalake::logstore::LogStoreFactory for DeltaLogs {
    fn with_options(
        &self,
        prefixed_store: deltalake::logstore::ObjectStoreRef,
        root_store: deltalake::logstore::ObjectStoreRef,
        location: &Url,
        options: &deltalake::logstore::StorageConfig,
    ) -> deltalake::DeltaResult<Arc<dyn deltalake::logstore::LogStore>> {
        Ok(deltalake::logstore::default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// How long an executor uses the settings it fetched for a store before
/// asking again: a replaced storage credential (a rotated key) reaches the
/// executors within this time.
const SETTINGS_TTL: Duration = Duration::from_secs(30);

/// A store an executor learns the settings of from the coordinator on
/// first use, and asks again for once they are [`SETTINGS_TTL`] old (the
/// same settings give back the same client). Clones share the client (the
/// streams it returns hold a clone).
#[derive(Clone)]
struct FetchedStore {
    url: Url,
    fetch: FetchOptions,
    inner: Arc<Mutex<Option<Fetched>>>,
}

/// A client built from fetched settings, and when they were fetched.
type Fetched = (Instant, Arc<dyn ObjectStore>);

impl FetchedStore {
    async fn inner(&self) -> object_store::Result<Arc<dyn ObjectStore>> {
        let cached = self.inner.lock().ok().and_then(|c| c.clone());
        if let Some((at, store)) = &cached
            && at.elapsed() < SETTINGS_TTL
        {
            return Ok(Arc::clone(store));
        }
        let options = match ((self.fetch)(store_key(&self.url)).await, cached) {
            (Ok(options), _) => options,
            // The coordinator is unreachable for a moment: go on with the
            // settings there are.
            (Err(_), Some((_, store))) => return Ok(store),
            (Err(e), None) => return Err(generic(e.into())),
        };
        let store = client(&self.url, &options).map_err(|e| generic(Box::new(e)))?;
        if let Ok(mut c) = self.inner.lock() {
            *c = Some((Instant::now(), Arc::clone(&store)));
        }
        Ok(store)
    }
}

fn generic(source: Box<dyn std::error::Error + Send + Sync>) -> object_store::Error {
    object_store::Error::Generic {
        store: "loch",
        source,
    }
}

impl fmt::Debug for FetchedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FetchedStore({})", store_key(&self.url))
    }
}

impl fmt::Display for FetchedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", store_key(&self.url))
    }
}

#[async_trait]
impl ObjectStore for FetchedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner().await?.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner().await?.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner().await?.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner().await?.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let this = self.clone();
        stream::once(async move { this.inner().await.map(|s| s.delete_stream(locations)) })
            .try_flatten()
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let this = self.clone();
        let prefix = prefix.cloned();
        stream::once(async move { this.inner().await.map(|s| s.list(prefix.as_ref())) })
            .try_flatten()
            .boxed()
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let this = self.clone();
        let prefix = prefix.cloned();
        let offset = offset.clone();
        stream::once(async move {
            this.inner()
                .await
                .map(|s| s.list_with_offset(prefix.as_ref(), &offset))
        })
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner().await?.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner().await?.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner().await?.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_settings_are_split_from_format_options() {
        let options: BTreeMap<String, String> = [
            ("aws.region", "eu-west-1"),
            ("format.aws_secret_access_key", "s"),
            ("AZURE_STORAGE_ACCOUNT_KEY", "k"),
            ("format.has_header", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let (storage, format) = split_options(&options);
        assert_eq!(
            storage.keys().collect::<Vec<_>>(),
            [
                "aws_region",
                "aws_secret_access_key",
                "azure_storage_account_key"
            ]
        );
        assert_eq!(format.keys().collect::<Vec<_>>(), ["format.has_header"]);
    }

    #[test]
    fn one_client_per_store_and_settings() -> Result<()> {
        let url =
            Url::parse("s3://bucket/a/b").map_err(|e| CatalogError::Invalid(e.to_string()))?;
        let other =
            Url::parse("s3://bucket/c").map_err(|e| CatalogError::Invalid(e.to_string()))?;
        let mut options = StoreOptions::new();
        options.insert("aws_region".into(), "eu-west-1".into());
        let a = client(&url, &options)?;
        let b = client(&other, &options)?;
        assert!(
            Arc::ptr_eq(&a, &b),
            "same bucket, same settings: one client"
        );
        options.insert("aws_endpoint".into(), "http://127.0.0.1:1".into());
        let c = client(&url, &options)?;
        assert!(!Arc::ptr_eq(&a, &c), "other settings: another client");
        Ok(())
    }
}
