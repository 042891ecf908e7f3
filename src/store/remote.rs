//! One object-store location: listing, reading, atomic and create-only puts, multipart uploads, deletes.

use super::*;

/// A prefix in an object store, with the store that serves it.
#[derive(Debug, Clone)]
pub struct Remote {
    /// The URL without a trailing slash, e.g. `s3://bucket/datasets/nightly`.
    pub url: String,
    /// The store for the URL's bucket or container.
    pub store: Arc<dyn ObjectStore>,
    /// The key prefix inside the bucket (may be empty).
    pub prefix: ObjectPath,
    /// `scheme://bucket` part of the URL, for turning keys back into URLs.
    base: String,
}

impl Remote {
    /// Parses an object-store URL and builds (or reuses) the store for its bucket.
    pub fn parse(s: &str) -> Result<Remote, StoreError> {
        let trimmed = s.trim_end_matches('/');
        let url = Url::parse(trimmed).map_err(|e| StoreError::BadUrl {
            url: s.into(),
            message: e.to_string(),
        })?;
        let host = url.host_str().unwrap_or_default();
        if host.is_empty() {
            return Err(StoreError::BadUrl {
                url: s.into(),
                message: "no bucket or container name".into(),
            });
        }
        let base = format!("{}://{}", url.scheme(), host);
        let store = store_for(&base)?;
        let prefix = ObjectPath::from_url_path(url.path()).map_err(|e| StoreError::BadUrl {
            url: s.into(),
            message: e.to_string(),
        })?;
        Ok(Remote {
            url: trimmed.to_string(),
            store,
            prefix,
            base,
        })
    }

    /// The object key of `rel` (a `/`-separated path relative to this prefix).
    pub fn key(&self, rel: &str) -> ObjectPath {
        let mut p = self.prefix.clone();
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            p = p.join(part);
        }
        p
    }

    /// The URL of an object key of this store.
    pub fn url_of(&self, key: &ObjectPath) -> String {
        format!("{}/{}", self.base, key)
    }

    /// The key relative to this prefix (`None` if it is outside).
    pub fn relative(&self, key: &ObjectPath) -> Option<String> {
        let parts: Vec<String> = key
            .prefix_match(&self.prefix)?
            .map(|p| p.as_ref().to_string())
            .collect();
        Some(parts.join("/"))
    }

    /// Every object under `rel` (recursively), sorted by key.
    pub fn list(&self, rel: &str) -> Result<Vec<object_store::ObjectMeta>, StoreError> {
        let prefix = self.key(rel);
        let url = self.url_of(&prefix);
        let mut out: Vec<object_store::ObjectMeta> = block_on(async {
            let mut stream = self.store.list(Some(&prefix));
            let mut v = Vec::new();
            while let Some(m) = stream.next().await {
                v.push(m.map_err(request("listing", &url))?);
            }
            Ok::<_, StoreError>(v)
        })?;
        out.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(out)
    }

    /// Size of one object, or `None` if it does not exist.
    pub fn head(&self, rel: &str) -> Result<Option<u64>, StoreError> {
        let key = self.key(rel);
        match block_on(self.store.head(&key)) {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(request("reading metadata of", &self.url_of(&key))(e)),
        }
    }

    /// What identifies the object's current content: its ETag (or, where the store gives none,
    /// its last-modified time) and size; `None` when the object does not exist.
    pub fn content_identity(&self, rel: &str) -> Result<Option<String>, StoreError> {
        let key = self.key(rel);
        match block_on(self.store.head(&key)) {
            Ok(m) => Ok(Some(match m.e_tag {
                Some(tag) => format!("{}:etag:{tag}", m.size),
                None => format!("{}:modified:{}", m.size, m.last_modified.timestamp_micros()),
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(request("reading metadata of", &self.url_of(&key))(e)),
        }
    }

    /// Downloads an object into `file` (streaming; memory is one network buffer).
    pub fn download_to(&self, rel: &str, file: &mut std::fs::File) -> Result<u64, StoreError> {
        let key = self.key(rel);
        let url = self.url_of(&key);
        block_on(async {
            let got = self
                .store
                .get(&key)
                .await
                .map_err(request("downloading", &url))?;
            let mut stream = got.into_stream();
            let mut n = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(request("downloading", &url))?;
                file.write_all(&chunk)
                    .map_err(io_err("spooling", Path::new(&url)))?;
                n += chunk.len() as u64;
            }
            Ok(n)
        })
    }

    /// Downloads an object to a local path (written to `path.tmp`, then renamed).
    pub fn download_file(&self, rel: &str, path: &Path) -> Result<u64, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        }
        let (tmp, mut f) =
            crate::util::create_temp_beside(path).map_err(io_err("creating", path))?;
        let n = match self.download_to(rel, &mut f) {
            Ok(n) => n,
            Err(e) => {
                drop(f);
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        drop(f);
        std::fs::rename(&tmp, path).map_err(io_err("renaming", &tmp))?;
        Ok(n)
    }

    /// Puts `bytes` as one object (a single atomic PUT).
    pub fn put_bytes(&self, rel: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let key = self.key(rel);
        let url = self.url_of(&key);
        block_on(self.store.put(&key, PutPayload::from(bytes)))
            .map(|_| ())
            .map_err(request("uploading", &url))
    }

    /// Creates the object only if no object has its key (`If-None-Match: *` on S3, the native
    /// create-only put on GCS and Azure): `Ok(true)` when this call created it, `Ok(false)` when
    /// it existed. Of many concurrent callers exactly one gets `true`, which is how sharded tasks
    /// elect the one that finalizes without a lock.
    pub fn put_new(&self, rel: &str, bytes: Vec<u8>) -> Result<bool, StoreError> {
        let key = self.key(rel);
        let url = self.url_of(&key);
        let opts = object_store::PutOptions {
            mode: object_store::PutMode::Create,
            ..Default::default()
        };
        match block_on(self.store.put_opts(&key, PutPayload::from(bytes), opts)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(request("creating", &url)(e)),
        }
    }

    /// A small object's bytes (`None` when there is no such object).
    pub fn get_bytes(&self, rel: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.key(rel);
        let url = self.url_of(&key);
        block_on(async {
            match self.store.get(&key).await {
                Ok(got) => got
                    .bytes()
                    .await
                    .map(|b| Some(b.to_vec()))
                    .map_err(request("downloading", &url)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(request("downloading", &url)(e)),
            }
        })
    }

    /// Uploads a local file with a multipart upload: readers see the object only once every part
    /// is in and the upload is completed; a failed upload is aborted (its parts deleted).
    pub fn put_file_multipart(&self, rel: &str, path: &Path) -> Result<(), StoreError> {
        let key = self.key(rel);
        let url = self.url_of(&key);
        let mut file = std::fs::File::open(path).map_err(io_err("opening", path))?;
        block_on(async {
            let upload = self
                .store
                .put_multipart(&key)
                .await
                .map_err(request("starting upload of", &url))?;
            let mut w = WriteMultipart::new_with_chunk_size(upload, MULTIPART_CHUNK);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = match file.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = w.abort().await;
                        return Err(io_err("reading", path)(e));
                    }
                };
                if n == 0 {
                    break;
                }
                if let Err(e) = w.wait_for_capacity(4).await {
                    return Err(request("uploading", &url)(e));
                }
                w.write(&buf[..n]);
            }
            w.finish()
                .await
                .map_err(request("completing upload of", &url))?;
            Ok(())
        })
    }

    /// Deletes an object (a missing one is not an error).
    pub fn delete(&self, rel: &str) -> Result<(), StoreError> {
        let key = self.key(rel);
        match block_on(self.store.delete(&key)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(request("deleting", &self.url_of(&key))(e)),
        }
    }
}

/// Multipart part size: S3 needs at least 5 MiB for every part but the last.
pub(super) const MULTIPART_CHUNK: usize = 8 << 20;

/// One store per `scheme://bucket`, built from the environment on first use.
pub(super) fn store_for(base: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    let stores = STORES.get_or_init(Default::default);
    let mut map = stores.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = map.get(base) {
        return Ok(s.clone());
    }
    let scheme = base.split("://").next().unwrap_or_default();
    let built: Result<Arc<dyn ObjectStore>, object_store::Error> = match scheme {
        "s3" | "s3a" => {
            let mut b = object_store::aws::AmazonS3Builder::from_env().with_url(base);
            // Create-only puts (`put_new`) use S3's native conditional writes unless the
            // environment chose another mechanism (`AWS_CONDITIONAL_PUT`).
            if std::env::var_os("AWS_CONDITIONAL_PUT").is_none() {
                b = b.with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch);
            }
            b.build().map(|s| Arc::new(s) as _)
        }
        "gs" => object_store::gcp::GoogleCloudStorageBuilder::from_env()
            .with_url(base)
            .build()
            .map(|s| Arc::new(s) as _),
        _ => object_store::azure::MicrosoftAzureBuilder::from_env()
            .with_url(base)
            .build()
            .map(|s| Arc::new(s) as _),
    };
    let store = built.map_err(request("configuring a client for", base))?;
    map.insert(base.to_string(), store.clone());
    Ok(store)
}
