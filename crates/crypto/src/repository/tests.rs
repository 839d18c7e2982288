//! The rotation sequence against a store that "crashes" (fails every
//! mutation) after a given number of puts and deletes.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use pgark_store::{
    ErrorKind, GetResult, MemoryStore, MultipartUpload, ObjectMeta, Operation, Result as StoreResult,
    StoreError,
};
use zeroize::Zeroizing;

use super::*;
use crate::KdfParams;

/// Lets `budget` puts/deletes through, then fails every one of them.
#[derive(Debug)]
struct CrashingStore {
    inner: Arc<MemoryStore>,
    budget: AtomicI64,
}

impl CrashingStore {
    fn new(inner: Arc<MemoryStore>, budget: i64) -> Self {
        CrashingStore {
            inner,
            budget: AtomicI64::new(budget),
        }
    }

    fn mutate(&self, op: Operation, target: &Key) -> StoreResult<()> {
        if self.budget.fetch_sub(1, Ordering::SeqCst) <= 0 {
            return Err(StoreError::new(
                ErrorKind::Permanent,
                op,
                self,
                target.as_str(),
                "crashed",
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for CrashingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "crashing({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for CrashingStore {
    async fn put(&self, key: &Key, data: Bytes, mode: PutMode) -> StoreResult<ObjectMeta> {
        self.mutate(Operation::Put, key)?;
        self.inner.put(key, data, mode).await
    }
    async fn put_multipart(&self, key: &Key, mode: PutMode) -> StoreResult<Box<dyn MultipartUpload>> {
        self.mutate(Operation::Put, key)?;
        self.inner.put_multipart(key, mode).await
    }
    async fn get(&self, key: &Key) -> StoreResult<GetResult> {
        self.inner.get(key).await
    }
    async fn head(&self, key: &Key) -> StoreResult<ObjectMeta> {
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &Key) -> StoreResult<()> {
        self.mutate(Operation::Delete, key)?;
        self.inner.delete(key).await
    }
}

fn cred(k: &MasterKey) -> Credential {
    Credential::Key(k.clone())
}

async fn opens(store: &dyn ObjectStore, k: &Credential) -> bool {
    match open(store, Some(k)).await {
        Ok(Some(_)) => true,
        Err(CryptoError::WrongKey { .. }) => false,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn init_and_open() {
    let store = MemoryStore::new();
    let master = MasterKey::generate();
    assert!(open(&store, None).await.unwrap().is_none(), "unencrypted");
    assert!(matches!(
        open(&store, Some(&cred(&master))).await,
        Err(CryptoError::RepositoryNotEncrypted)
    ));
    let dk = init(&store, &master).await.unwrap();
    assert_eq!(
        open(&store, Some(&cred(&master))).await.unwrap().unwrap().id(),
        dk.id()
    );
    assert!(matches!(open(&store, None).await, Err(CryptoError::KeyRequired)));
    let other = MasterKey::generate();
    let err = open(&store, Some(&cred(&other))).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("this key does not open this repository"),
        "{err}"
    );
    // A retried init with the same key is harmless; another key is refused.
    assert_eq!(init(&store, &master).await.unwrap().id(), dk.id());
    assert!(matches!(
        init(&store, &other).await,
        Err(CryptoError::AlreadyEncrypted)
    ));
    // The stored document is the keyring.
    let stored = store.get_bytes(&key(KEYRING_KEY)).await.unwrap();
    assert_eq!(Keyring::from_json(&stored).unwrap().data_key_id(), dk.id());
}

#[tokio::test]
async fn rotation_completes_and_retires_the_old_key() {
    let store = MemoryStore::new();
    let (old, new) = (MasterKey::generate(), MasterKey::generate());
    let dk = init(&store, &old).await.unwrap();
    assert_eq!(
        rotate(&store, &cred(&old), &cred(&new)).await.unwrap(),
        Rotation::Rotated
    );
    assert!(!opens(&store, &cred(&old)).await);
    assert_eq!(
        open(&store, Some(&cred(&new))).await.unwrap().unwrap().id(),
        dk.id()
    );
    assert!(!store.exists(&key(ROTATION_JOURNAL_KEY)).await.unwrap());
    assert_eq!(
        read_keyring(&store).await.unwrap().unwrap().master_key_ids(),
        vec![new.id()]
    );
    // Again: nothing to do. Back with the retired key as "old": refused.
    assert_eq!(
        rotate(&store, &cred(&old), &cred(&new)).await.unwrap(),
        Rotation::AlreadyDone
    );
    assert!(matches!(
        rotate(&store, &cred(&old), &cred(&MasterKey::generate())).await,
        Err(CryptoError::WrongKey { .. })
    ));
    assert!(matches!(
        rotate(&store, &cred(&new), &cred(&new)).await,
        Err(CryptoError::SameKey { .. })
    ));
}

/// The heart of the design: stop the rotation after every number of
/// mutations; at each stop the old or the new key opens; a rerun finishes.
#[tokio::test]
async fn interrupted_rotation_never_locks_out_and_resumes() {
    let mut seen_both = 0;
    for budget in 0..=4 {
        let mem = Arc::new(MemoryStore::new());
        let (old, new) = (MasterKey::generate(), MasterKey::generate());
        let dk = init(mem.as_ref(), &old).await.unwrap();
        let crashing = CrashingStore::new(mem.clone(), budget);
        let result = rotate(&crashing, &cred(&old), &cred(&new)).await;
        assert_eq!(result.is_ok(), budget == 4, "budget {budget}: {result:?}");

        let old_opens = opens(mem.as_ref(), &cred(&old)).await;
        let new_opens = opens(mem.as_ref(), &cred(&new)).await;
        assert!(old_opens || new_opens, "budget {budget}: neither key opens");
        let expected = match budget {
            0 => (true, false),
            1..=3 => (true, true),
            _ => (false, true),
        };
        assert_eq!((old_opens, new_opens), expected, "budget {budget}");
        seen_both += (old_opens && new_opens) as u32;

        // Another rotation to a third key is refused while interrupted.
        if (1..=3).contains(&budget) {
            let third = MasterKey::generate();
            assert!(matches!(
                rotate(mem.as_ref(), &cred(&old), &cred(&third)).await,
                Err(CryptoError::RotationInProgress { .. })
            ));
        }

        // Rerun to completion on a healthy store.
        let outcome = rotate(mem.as_ref(), &cred(&old), &cred(&new)).await.unwrap();
        let want = match budget {
            0 => Rotation::Rotated,
            4 => Rotation::AlreadyDone,
            _ => Rotation::Resumed,
        };
        assert_eq!(outcome, want, "budget {budget}");
        assert!(!opens(mem.as_ref(), &cred(&old)).await, "budget {budget}");
        assert_eq!(
            open(mem.as_ref(), Some(&cred(&new))).await.unwrap().unwrap().id(),
            dk.id()
        );
        assert!(!mem.exists(&key(ROTATION_JOURNAL_KEY)).await.unwrap());
    }
    assert_eq!(seen_both, 3);
}

#[tokio::test]
async fn racing_rotation_is_refused_by_the_create_only_journal() {
    let store = MemoryStore::new();
    let (old, a, b) = (
        MasterKey::generate(),
        MasterKey::generate(),
        MasterKey::generate(),
    );
    init(&store, &old).await.unwrap();
    // Rotation to `a` got as far as its journal.
    let current = read_keyring(&store).await.unwrap().unwrap();
    let journal = current.add_key(&old, &a).unwrap();
    store
        .put(
            &key(ROTATION_JOURNAL_KEY),
            Bytes::from(journal.to_json()),
            PutMode::Create,
        )
        .await
        .unwrap();
    let err = rotate(&store, &cred(&old), &cred(&b)).await.unwrap_err();
    assert!(matches!(err, CryptoError::RotationInProgress { .. }), "{err:?}");
    assert!(err.to_string().contains(&a.id().to_string()), "{err}");
    // b opens nothing; old and a open.
    assert!(!opens(&store, &cred(&b)).await);
    assert!(opens(&store, &cred(&a)).await);
    assert_eq!(
        rotate(&store, &cred(&old), &cred(&a)).await.unwrap(),
        Rotation::Resumed
    );
}

#[tokio::test]
async fn journal_of_another_data_key_is_not_trusted() {
    let store = MemoryStore::new();
    let old = MasterKey::generate();
    init(&store, &old).await.unwrap();
    // A journal wrapping some other data key under an attacker's key.
    let attacker = MasterKey::generate();
    let (foreign, _) = Keyring::create(&attacker);
    store
        .put(
            &key(ROTATION_JOURNAL_KEY),
            Bytes::from(foreign.to_json()),
            PutMode::Create,
        )
        .await
        .unwrap();
    assert!(!opens(&store, &cred(&attacker)).await);
    assert!(opens(&store, &cred(&old)).await);
}

#[tokio::test]
async fn passphrase_repository_rotation() {
    let store = MemoryStore::new();
    let cheap = KdfParams::new(64, 1, 1).unwrap();
    let first = MasterKey::from_passphrase("first passphrase", &cheap).unwrap();
    let dk = init(&store, &first).await.unwrap();
    let pass = |p: &str| Credential::Passphrase(Zeroizing::new(p.to_string()));
    assert_eq!(
        open(&store, Some(&pass("first passphrase")))
            .await
            .unwrap()
            .unwrap()
            .id(),
        dk.id()
    );
    assert!(!opens(&store, &pass("second passphrase")).await);
    // Passphrase -> raw key -> passphrase (new salt, recommended costs).
    let raw = MasterKey::generate();
    rotate(&store, &pass("first passphrase"), &cred(&raw))
        .await
        .unwrap();
    assert!(!opens(&store, &pass("first passphrase")).await);
    rotate(&store, &cred(&raw), &pass("second passphrase"))
        .await
        .unwrap();
    assert!(!opens(&store, &cred(&raw)).await);
    assert_eq!(
        open(&store, Some(&pass("second passphrase")))
            .await
            .unwrap()
            .unwrap()
            .id(),
        dk.id()
    );
    let keyring = read_keyring(&store).await.unwrap().unwrap();
    let kdf = keyring.wraps()[0].kdf.as_ref().unwrap();
    assert_eq!(kdf.memory_kib, 65536);
}
