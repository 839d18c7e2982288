//! Behaviour specific to [`LocalStore`]: on-disk layout, temporary files,
//! crash leftovers, unusable repository paths, durability calls.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use pgark_store::{ErrorKind, Key, LocalStore, ObjectStore, ObjectStoreExt, Operation, PutMode};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

fn key(s: &str) -> Key {
    Key::new(s).unwrap()
}

/// Every file and directory below `dir`, as `/`-separated relative paths
/// (directories with a trailing `/`), sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = format!("{rel}{}", entry.file_name().to_str().unwrap());
            if entry.file_type().unwrap().is_dir() {
                out.push(format!("{name}/"));
                walk(&entry.path(), &format!("{name}/"), out);
            } else {
                out.push(name);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out);
    out.sort();
    out
}

fn temp_files(dir: &Path) -> Vec<String> {
    tree(dir)
        .into_iter()
        .filter(|p| p.ends_with(".pgark-tmp"))
        .collect()
}

fn running_as_root() -> bool {
    let probe = tempfile::NamedTempFile::new().unwrap();
    probe.as_file().metadata().unwrap().uid() == 0
}

#[tokio::test]
async fn objects_are_plain_files_in_nested_directories() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path()).unwrap();
    assert_eq!(store.to_string(), format!("file://{}", dir.path().display()));
    assert_eq!(store.root(), dir.path());

    let k = key("wal/0000000100000000/000000010000000000000001");
    store
        .put(&k, Bytes::from_static(b"segment"), PutMode::Create)
        .await
        .unwrap();
    let file = dir.path().join("wal/0000000100000000/000000010000000000000001");
    assert_eq!(fs::read(&file).unwrap(), b"segment");
    assert_eq!(
        tree(dir.path()),
        [
            "wal/",
            "wal/0000000100000000/",
            "wal/0000000100000000/000000010000000000000001"
        ]
    );

    // Deleting the only object prunes the directories it leaves empty, but
    // never the root.
    store.delete(&k).await.unwrap();
    assert!(tree(dir.path()).is_empty(), "{:?}", tree(dir.path()));
    assert!(dir.path().is_dir());
    // And the key can be written again.
    store
        .put(&k, Bytes::from_static(b"again"), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(fs::read(&file).unwrap(), b"again");

    // Pruning stops at directories that still hold something.
    let sibling = key("wal/0000000100000000/000000010000000000000002");
    store
        .put(&sibling, Bytes::from_static(b"2"), PutMode::Create)
        .await
        .unwrap();
    store.delete(&k).await.unwrap();
    assert_eq!(
        tree(dir.path()),
        [
            "wal/",
            "wal/0000000100000000/",
            "wal/0000000100000000/000000010000000000000002"
        ]
    );
}

#[tokio::test]
async fn temporary_files_of_uploads_in_progress_are_not_listed() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path()).unwrap();
    let k = key("base/20240101/data.tar");

    let mut upload = store.put_multipart(&k, PutMode::Overwrite).await.unwrap();
    upload.put_part(Bytes::from(vec![7u8; 1000])).await.unwrap();
    // The temporary file sits next to the final one, named after it.
    let tmps = temp_files(dir.path());
    assert_eq!(tmps.len(), 1, "{tmps:?}");
    assert!(tmps[0].starts_with("base/20240101/data.tar."), "{tmps:?}");
    assert!(store.list("").await.unwrap().is_empty());
    assert!(store.list("base/20240101/").await.unwrap().is_empty());
    assert!(store.head(&k).await.unwrap_err().is_not_found());
    let meta = upload.complete().await.unwrap();
    assert_eq!(meta.size, 1000);
    assert!(temp_files(dir.path()).is_empty());
    let listed = store.list("").await.unwrap();
    let listed_keys: Vec<_> = listed.iter().map(|m| (&m.key, m.size)).collect();
    assert_eq!(listed_keys, [(&meta.key, meta.size)]);
    // The listing reports the file's mtime; `complete` need not.
    assert!(listed[0].modified.is_some(), "{listed:?}");

    // Aborted and dropped uploads remove their temporary files.
    let upload = store.put_multipart(&k, PutMode::Create).await.unwrap();
    assert_eq!(temp_files(dir.path()).len(), 1);
    upload.abort().await.unwrap();
    assert!(temp_files(dir.path()).is_empty());
    let mut upload = store.put_multipart(&k, PutMode::Overwrite).await.unwrap();
    upload.put_part(Bytes::from_static(b"x")).await.unwrap();
    drop(upload);
    assert!(temp_files(dir.path()).is_empty());
    assert_eq!(store.get_bytes(&k).await.unwrap(), vec![7u8; 1000]);

    // A create-only upload that loses removes its temporary file too.
    let mut upload = store.put_multipart(&k, PutMode::Create).await.unwrap();
    upload.put_part(Bytes::from_static(b"x")).await.unwrap();
    assert!(upload.complete().await.unwrap_err().is_already_exists());
    assert!(temp_files(dir.path()).is_empty());
    // So does a create-only single put.
    let err = store
        .put(&k, Bytes::from_static(b"x"), PutMode::Create)
        .await
        .unwrap_err();
    assert!(err.is_already_exists(), "{err}");
    assert!(temp_files(dir.path()).is_empty());
}

#[tokio::test]
async fn crash_leftovers_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path()).unwrap();
    store
        .put(&key("x"), Bytes::from_static(b"real"), PutMode::Create)
        .await
        .unwrap();
    fs::create_dir_all(dir.path().join("wal/sub")).unwrap();
    // What a crash during a put leaves: temporary files, an empty directory.
    fs::write(dir.path().join("x.abc.pgark-tmp"), b"partial").unwrap();
    fs::write(dir.path().join("y.0123456789abcdef.pgark-tmp"), b"partial").unwrap();
    fs::write(
        dir.path().join("wal/sub/000000010000000000000001.abc.pgark-tmp"),
        b"p",
    )
    .unwrap();
    // Files pgark never writes: names that are not keys.
    fs::write(dir.path().join("has space"), b"?").unwrap();

    let listed: Vec<String> = store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key.to_string())
        .collect();
    assert_eq!(listed, ["x"]);
    assert!(store.list("wal/").await.unwrap().is_empty());
    assert!(store.list("y").await.unwrap().is_empty());
    assert_eq!(
        store.get_bytes(&key("x")).await.unwrap(),
        Bytes::from_static(b"real")
    );
    assert!(store.get(&key("y")).await.unwrap_err().is_not_found());
    assert!(
        Key::new("x.abc.pgark-tmp").is_err(),
        "temporary names are never keys"
    );

    // Leftovers do not get in the way of new puts.
    let k = key("wal/sub/000000010000000000000001");
    store
        .put(&k, Bytes::from_static(b"seg"), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(store.get_bytes(&k).await.unwrap(), Bytes::from_static(b"seg"));
}

#[tokio::test]
async fn a_root_that_is_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    fs::write(&file, b"").unwrap();
    let err = LocalStore::new(&file).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert_eq!(err.operation(), Operation::Open);
    let msg = err.to_string();
    assert!(msg.contains(&file.display().to_string()), "{msg}");
    assert!(msg.contains("not a directory"), "{msg}");
}

#[tokio::test]
async fn a_root_that_cannot_be_created_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    fs::write(&file, b"").unwrap();
    let root = file.join("repo");
    let err = LocalStore::new(&root).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert_eq!(err.operation(), Operation::Open);
    let msg = err.to_string();
    assert!(msg.contains(&root.display().to_string()), "{msg}");
    assert!(msg.contains("cannot create"), "{msg}");
    assert!(msg.contains("Not a directory"), "{msg}");
}

#[tokio::test]
async fn missing_parents_of_the_root_are_created() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("a/b/c");
    let store = LocalStore::new(&root).unwrap();
    assert!(root.is_dir());
    store
        .put(&key("k"), Bytes::from_static(b"v"), PutMode::Create)
        .await
        .unwrap();
    // Reopening an existing repository works.
    let again = LocalStore::new(&root).unwrap();
    assert_eq!(
        again.get_bytes(&key("k")).await.unwrap(),
        Bytes::from_static(b"v")
    );
}

/// Issue 11: the reading commands open their repository with
/// `LocalStore::open`, which must not turn a mistyped path into a new,
/// empty repository.
#[tokio::test]
async fn open_creates_nothing_and_a_missing_root_holds_no_objects() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("a/b/c");
    let store = LocalStore::open(&root).unwrap();
    assert!(!dir.path().join("a").exists(), "open created a directory");
    assert_eq!(store.root(), root);
    let err = store.get_bytes(&key("repository.json")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(store.list("").await.unwrap().is_empty());
    let err = store
        .put(&key("k"), Bytes::from_static(b"v"), PutMode::Create)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent, "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(!dir.path().join("a").exists(), "a put created a directory");
    // An existing directory opens as with `new`; a file is refused.
    fs::create_dir_all(&root).unwrap();
    let store = LocalStore::open(&root).unwrap();
    store
        .put(&key("k"), Bytes::from_static(b"v"), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(
        store.get_bytes(&key("k")).await.unwrap(),
        Bytes::from_static(b"v")
    );
    let file = dir.path().join("file");
    fs::write(&file, b"").unwrap();
    let err = LocalStore::open(&file).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert!(err.to_string().contains("not a directory"), "{err}");
}

#[tokio::test]
async fn an_unwritable_repository_gives_a_permanent_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let store = LocalStore::new(&root).unwrap();
    store
        .put(&key("a/old"), Bytes::from_static(b"1"), PutMode::Create)
        .await
        .unwrap();

    if !running_as_root() {
        // Permission bits bind only unprivileged users.
        fs::set_permissions(&root, fs::Permissions::from_mode(0o500)).unwrap();
        fs::set_permissions(root.join("a"), fs::Permissions::from_mode(0o500)).unwrap();
        for k in ["new", "a/new", "b/new"] {
            let err = store
                .put(&key(k), Bytes::from_static(b"x"), PutMode::Create)
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Permanent, "{err}");
            let msg = err.to_string();
            assert!(msg.contains(&root.display().to_string()), "{msg}");
            assert!(msg.contains("ermission denied"), "{msg}");
        }
        // Reading still works.
        assert_eq!(
            store.get_bytes(&key("a/old")).await.unwrap(),
            Bytes::from_static(b"1")
        );
        fs::set_permissions(root.join("a"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).unwrap();
    }

    // A repository directory that vanished (an unmounted disk, say) is not
    // silently recreated.
    fs::remove_dir_all(&root).unwrap();
    for k in ["new", "a/new"] {
        let err = store
            .put(&key(k), Bytes::from_static(b"x"), PutMode::Create)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent, "{err}");
        assert!(err.to_string().contains(&root.display().to_string()), "{err}");
        let Err(err) = store.put_multipart(&key(k), PutMode::Overwrite).await else {
            panic!("put_multipart into a vanished repository succeeded");
        };
        assert_eq!(err.kind(), ErrorKind::Permanent, "{err}");
    }
    assert!(!root.exists());
    // Reads of a vanished repository find nothing.
    assert!(store.list("").await.unwrap().is_empty());
    assert!(store.get(&key("a/old")).await.unwrap_err().is_not_found());

    // The same for a repository path that became a file.
    fs::write(&root, b"").unwrap();
    let err = store
        .put(&key("a/new"), Bytes::from_static(b"x"), PutMode::Create)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent, "{err}");
    assert!(err.to_string().contains(&root.display().to_string()), "{err}");
}

#[tokio::test]
async fn an_object_in_the_way_of_a_directory_is_a_clear_permanent_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path()).unwrap();
    store
        .put(&key("a"), Bytes::from_static(b"file"), PutMode::Create)
        .await
        .unwrap();
    for mode in [PutMode::Overwrite, PutMode::Create] {
        let err = store
            .put(&key("a/b"), Bytes::from_static(b"x"), mode)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent, "{err}");
        assert!(err.to_string().contains("in the way"), "{err}");
        let err = store
            .put(&key("a/b/c"), Bytes::from_static(b"x"), mode)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent, "{err}");
    }
    store
        .put(&key("d/e"), Bytes::from_static(b"x"), PutMode::Create)
        .await
        .unwrap();
    for mode in [PutMode::Overwrite, PutMode::Create] {
        let err = store
            .put(&key("d"), Bytes::from_static(b"x"), mode)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent, "{err}");
        assert!(err.to_string().contains("directory of other objects"), "{err}");
    }
    assert!(temp_files(dir.path()).is_empty());
    assert_eq!(
        store.get_bytes(&key("a")).await.unwrap(),
        Bytes::from_static(b"file")
    );
    assert_eq!(
        store.get_bytes(&key("d/e")).await.unwrap(),
        Bytes::from_static(b"x")
    );
}

#[tokio::test]
async fn get_streams_in_bounded_chunks_and_notices_a_changed_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path()).unwrap();
    let k = key("big");
    let data: Vec<u8> = (0..(1 << 20) + 1).map(|i: u32| (i % 251) as u8).collect();
    store
        .put(&k, Bytes::from(data.clone()), PutMode::Create)
        .await
        .unwrap();
    let got = store.get(&k).await.unwrap();
    assert_eq!(got.meta.size, data.len() as u64);
    let chunks: Vec<Bytes> = got.stream.try_collect().await.unwrap();
    assert!(chunks.iter().all(|c| !c.is_empty() && c.len() <= 256 << 10));
    assert_eq!(chunks.len(), 5);
    assert_eq!(chunks.concat(), data);

    // Someone truncates the file behind pgark's back: the reader gets an
    // error, not a short object.
    let mut got = store.get(&k).await.unwrap();
    got.stream.next().await.unwrap().unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("big"))
        .unwrap()
        .set_len(1000)
        .unwrap();
    let rest: Result<Vec<Bytes>, _> = got.stream.try_collect().await;
    let err = rest.unwrap_err();
    assert!(err.to_string().contains("changed size"), "{err}");

    // And one that grows.
    store
        .put(&k, Bytes::from_static(b"short"), PutMode::Overwrite)
        .await
        .unwrap();
    let got = store.get(&k).await.unwrap();
    fs::write(dir.path().join("big"), b"longer than before").unwrap();
    let err = got.stream.try_collect::<Vec<Bytes>>().await.unwrap_err();
    assert!(err.to_string().contains("changed size"), "{err}");
}

#[tokio::test]
async fn directories_are_not_objects() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path()).unwrap();
    store
        .put(&key("d/e"), Bytes::from_static(b"x"), PutMode::Create)
        .await
        .unwrap();
    fs::create_dir(dir.path().join("empty")).unwrap();
    for k in ["d", "empty"] {
        assert!(store.head(&key(k)).await.unwrap_err().is_not_found());
        assert!(store.get(&key(k)).await.unwrap_err().is_not_found());
        store.delete(&key(k)).await.unwrap();
    }
    assert!(dir.path().join("empty").is_dir());
    assert_eq!(store.list("").await.unwrap().len(), 1);
}

#[tokio::test]
async fn symbolic_links_are_followed() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    fs::write(elsewhere.path().join("seg"), b"linked").unwrap();
    let store = LocalStore::new(dir.path()).unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("wal")).unwrap();
    std::os::unix::fs::symlink(elsewhere.path().join("seg"), dir.path().join("file")).unwrap();
    // A link back up the tree is not walked round and round.
    std::os::unix::fs::symlink(".", elsewhere.path().join("loop")).unwrap();
    std::os::unix::fs::symlink(dir.path(), elsewhere.path().join("up")).unwrap();
    let all: Vec<String> = store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key.to_string())
        .collect();
    assert_eq!(all, ["file", "wal/seg"]);
    let wal: Vec<String> = store
        .list("wal/s")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key.to_string())
        .collect();
    assert_eq!(wal, ["wal/seg"]);
    assert_eq!(
        store.get_bytes(&key("wal/seg")).await.unwrap(),
        Bytes::from_static(b"linked")
    );
    assert_eq!(store.head(&key("file")).await.unwrap().size, 6);
}

/// Deletes prune directories that concurrent puts are about to write into;
/// the puts must cope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_survive_concurrent_pruning_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalStore::new(dir.path()).unwrap());
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..150 {
                    let k = key(&format!("shared/sub/t{t}-{i}"));
                    let data = Bytes::from(format!("{t}/{i}"));
                    let mode = if i % 2 == 0 {
                        PutMode::Create
                    } else {
                        PutMode::Overwrite
                    };
                    store.put(&k, data.clone(), mode).await.unwrap();
                    assert_eq!(store.get_bytes(&k).await.unwrap(), data);
                    store.delete(&k).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert!(tree(dir.path()).is_empty(), "{:?}", tree(dir.path()));
}

/// A delete prunes a directory a concurrent put has just made, and then
/// that directory's parent, before the put has synced the parent: the put
/// makes the directories again rather than failing. (Deep keys, many
/// writers: the window is a few instructions wide.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn puts_survive_pruning_of_the_directories_they_just_made() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalStore::new(dir.path()).unwrap());
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..250 {
                    let k = key(&format!("a/b/c/d/e/t{t}-{i}"));
                    store
                        .put(&k, Bytes::from_static(b"x"), PutMode::Create)
                        .await
                        .unwrap_or_else(|e| panic!("put {k:?}: {e}"));
                    store.delete(&k).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert!(tree(dir.path()).is_empty(), "{:?}", tree(dir.path()));
}

/// fsync of files and directories must not fail on tmpfs, where it is a
/// no-op.
#[tokio::test]
async fn durability_calls_work_on_tmpfs() {
    let shm = Path::new("/dev/shm");
    let on_tmpfs = fs::read_to_string("/proc/mounts")
        .map(|m| {
            m.lines()
                .any(|l| l.split(' ').nth(1) == Some("/dev/shm") && l.contains(" tmpfs "))
        })
        .unwrap_or(false);
    if !on_tmpfs {
        eprintln!("skipped: no tmpfs at /dev/shm");
        return;
    }
    let dir = tempfile::tempdir_in(shm).unwrap();
    let store = LocalStore::new(dir.path().join("new/repo")).unwrap();
    let k = key("a/b/c");
    store
        .put(&k, Bytes::from_static(b"one"), PutMode::Create)
        .await
        .unwrap();
    store
        .put(&k, Bytes::from_static(b"two"), PutMode::Overwrite)
        .await
        .unwrap();
    let mut upload = store.put_multipart(&key("a/m"), PutMode::Create).await.unwrap();
    upload.put_part(Bytes::from_static(b"part")).await.unwrap();
    upload.complete().await.unwrap();
    assert_eq!(store.get_bytes(&k).await.unwrap(), Bytes::from_static(b"two"));
    store.delete(&k).await.unwrap();
    store.delete(&key("a/m")).await.unwrap();
    assert!(store.list("").await.unwrap().is_empty());
}

/// A repository holds a copy of the database: objects and directories are
/// not readable by other users.
#[tokio::test]
async fn objects_and_directories_are_private_to_owner_and_group() {
    use pgark_store::{Key, LocalStore, ObjectStore, PutMode};
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path().join("repo")).unwrap();
    store
        .put(
            &Key::new("a/b/c").unwrap(),
            bytes::Bytes::from_static(b"x"),
            PutMode::Create,
        )
        .await
        .unwrap();
    let mode = |p: &str| {
        std::fs::metadata(dir.path().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("repo/a/b/c") & 0o007, 0, "object readable by others");
    assert_eq!(mode("repo/a/b") & 0o007, 0, "directory open to others");
    assert_eq!(mode("repo") & 0o007, 0, "root open to others");
}
