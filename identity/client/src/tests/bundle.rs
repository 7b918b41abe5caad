//! Following the trust bundle file as the kubelet updates a mounted
//! ConfigMap: the file is a symlink through `..data`, and an update swaps
//! `..data` to a new timestamped directory by rename.

use crate::bundle::watch_file;
use crate::testing::TestCa;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

/// Writes `pem` as the kubelet does: a fresh `..<version>` directory, then
/// `..data` atomically pointed at it.
fn kubelet_write(dir: &Path, version: &str, pem: &str) {
    let data = dir.join(format!("..{version}"));
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("trust-bundle.pem"), pem).unwrap();
    let tmp = dir.join("..data_tmp");
    symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    let file = dir.join("trust-bundle.pem");
    if std::fs::symlink_metadata(&file).is_err() {
        symlink("..data/trust-bundle.pem", &file).unwrap();
    }
}

#[tokio::test]
async fn a_rotated_configmap_volume_reaches_the_bundle_watch() {
    let dir = tempfile::tempdir().unwrap();
    let old = TestCa::new("cluster.local");
    let new = TestCa::new("cluster.local");
    kubelet_write(dir.path(), "2026_01_01_00_00_00.1", &old.bundle().to_pem());
    let mut rx = watch_file(
        dir.path().join("trust-bundle.pem"),
        Duration::from_millis(20),
    );
    assert_eq!(rx.borrow().as_ref().map(|b| b.anchors().len()), Some(1));

    // An anchor added for rotation: both anchors in the ConfigMap.
    let both = format!("{}{}", old.bundle().to_pem(), new.bundle().to_pem());
    kubelet_write(dir.path(), "2026_01_01_00_01_00.2", &both);
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .expect("the swap is noticed")
        .unwrap();
    let bundle = rx.borrow().clone().unwrap();
    assert_eq!(
        bundle.anchors(),
        &[old.anchor().clone(), new.anchor().clone()]
    );
}
