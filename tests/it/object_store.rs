//! Object stores against a real S3-compatible HTTP server: `moto` in server mode, started by the
//! test as a separate process (`HINDSIGHT_MOTO_SERVER`, default `.venv-test/bin/moto_server`;
//! `scripts/test.sh` installs it). A missing server fails the test with how to install it.
//!
//! Round trip: inputs are read from `s3://`, the dataset is written to `s3://`, validated and
//! summarised from `s3://`; a rerun is a no-op; a stray object makes `validate` fail; a 12 MiB
//! multipart upload arrives intact; create-only puts admit one writer; a two-task sharded run's
//! last task finalizes it (same totals as the plain run); `compact` folds its shards into one.

use crate::common::{ok, sample};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use hindsight::store::Remote;

const BIN: &str = env!("CARGO_BIN_EXE_hindsight");

/// A moto S3 server on a free local port, killed on drop.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    fn start() -> Moto {
        let bin = std::env::var("HINDSIGHT_MOTO_SERVER").unwrap_or_else(|_| {
            format!("{}/.venv-test/bin/moto_server", env!("CARGO_MANIFEST_DIR"))
        });
        assert!(
            Path::new(&bin).is_file(),
            "the S3 test server is not installed ({bin} missing). Install it with \
             `python3 -m venv .venv-test && .venv-test/bin/pip install 'moto[server]==5.2.5'` \
             (scripts/test.sh does this), or point HINDSIGHT_MOTO_SERVER at a moto_server binary"
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        // Wait until it answers HTTP (start-up takes a few seconds on a busy machine).
        let deadline = Instant::now() + Duration::from_secs(120);
        while http(&moto.endpoint, "GET", "/").is_none() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        moto
    }

    fn create_bucket(&self, name: &str) {
        let status = http(&self.endpoint, "PUT", &format!("/{name}")).expect("moto answers");
        assert_eq!(status, 200, "creating bucket {name}");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bare HTTP/1.1 request; returns the status code.
fn http(endpoint: &str, method: &str, path: &str) -> Option<u16> {
    let host = endpoint.strip_prefix("http://")?;
    let mut s = TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    resp.split_whitespace().nth(1)?.parse().ok()
}

fn env_for(moto: &Moto) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT", moto.endpoint.clone()),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", "us-east-1".into()),
        (
            "HINDSIGHT_MODEL",
            format!(
                "{}/models/SmolLM2-135M-Instruct.Q4_1.gguf",
                env!("CARGO_MANIFEST_DIR")
            ),
        ),
    ]
}

fn run(moto: &Moto, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .envs(env_for(moto))
        .output()
        .expect("run hindsight")
}

#[test]
fn s3_round_trip_reads_inputs_writes_and_validates_a_dataset() {
    let moto = Moto::start();
    moto.create_bucket("logs");
    // This test process's own client (hindsight::store) reads the same store settings. Only the
    // AWS_* variables are set process-wide: every other test shares this process and its children
    // inherit the environment.
    for (k, v) in env_for(&moto)
        .into_iter()
        .filter(|(k, _)| k.starts_with("AWS_"))
    {
        std::env::set_var(k, v);
    }
    let input = Remote::parse("s3://logs/raw/2024-06-01").expect("input prefix");
    input
        .put_bytes(
            "hints.jsonl",
            std::fs::read(sample("hints.jsonl")).expect("sample"),
        )
        .expect("upload hints");
    input
        .put_bytes(
            "more/openai.jsonl.gz",
            std::fs::read(sample("openai_messages_more.jsonl.gz")).expect("sample"),
        )
        .expect("upload gz");
    input
        .put_bytes(".hidden.jsonl", b"not data\n".to_vec())
        .expect("upload hidden");

    // A multipart upload with several parts (8 MiB parts) arrives intact.
    let dir = std::env::temp_dir().join(format!("hindsight-s3-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp");
    let big: Vec<u8> = (0..12u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("big.bin"), &big).expect("big");
    let scratch = Remote::parse("s3://logs/scratch").expect("scratch");
    scratch
        .put_file_multipart("big.bin", &dir.join("big.bin"))
        .expect("multipart upload");
    assert_eq!(
        scratch.head("big.bin").expect("head"),
        Some(big.len() as u64)
    );
    let mut back = tempfile::tempfile().expect("tmp");
    scratch.download_to("big.bin", &mut back).expect("download");
    let mut got = Vec::new();
    use std::io::Seek;
    back.seek(std::io::SeekFrom::Start(0)).expect("seek");
    back.read_to_end(&mut got).expect("read");
    assert!(got == big, "multipart round trip changed the bytes");

    // Run: inputs from a prefix (hidden objects skipped), dataset to another prefix.
    let pipeline = dir.join("p.toml");
    std::fs::write(
        &pipeline,
        "name = \"s3\"\n[input]\npaths = [\"unused\"]\nchunk_records = 2\n[output]\ndir = \"unused\"\n",
    )
    .expect("pipeline");
    let ps = pipeline.to_str().expect("utf8");
    let out_url = "s3://logs/datasets/nightly";
    let args = [
        "run",
        ps,
        "--input",
        "s3://logs/raw/2024-06-01/",
        "--output",
        out_url,
        "--no-progress",
    ];
    let stdout = ok(&run(&moto, &args));
    assert_eq!(stdout.trim(), out_url);

    let out = Remote::parse(out_url).expect("out");
    let names: Vec<String> = out
        .list("")
        .expect("list")
        .iter()
        .filter_map(|m| out.relative(&m.location))
        .collect();
    assert!(names.contains(&"manifest.json".to_string()), "{names:?}");
    assert!(names.contains(&"run_report.json".to_string()), "{names:?}");
    assert!(
        names.iter().any(|n| n.starts_with("_state/chunks/")),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    let fetch = |rel: &str| -> serde_json::Value {
        let mut f = tempfile::tempfile().expect("tmp");
        out.download_to(rel, &mut f).expect("download");
        f.seek(std::io::SeekFrom::Start(0)).expect("seek");
        serde_json::from_reader(f).expect("json")
    };
    let manifest = fetch("manifest.json");
    let report = fetch("run_report.json");
    assert_eq!(
        report["ingest"]["files"].as_u64(),
        Some(2),
        "hidden object skipped"
    );
    let rows = manifest["totals"]["rows"].as_u64().expect("rows");
    assert!(rows > 0);
    assert_eq!(Some(rows), report["counts"]["rows_written"].as_u64());
    let shards = manifest["shards"].as_array().expect("shards");
    for s in shards {
        let f = s["file"].as_str().expect("file");
        assert!(
            names.contains(&f.to_string()),
            "{f} listed but not uploaded"
        );
    }

    // Validate and summarise straight from S3.
    let v = ok(&run(&moto, &["validate", out_url]));
    assert!(v.contains(&format!("{rows} rows")), "{v}");
    let stats: serde_json::Value =
        serde_json::from_str(&ok(&run(&moto, &["stats", out_url, "--json"]))).expect("stats json");
    assert_eq!(stats["rows"].as_u64(), Some(rows), "{stats}");

    // Rows carry the object URLs as provenance; chunk ids use them too.
    let m = hindsight::store::Mirror::open(out_url).expect("mirror");
    m.pull_dataset().expect("pull");
    let first = shards[0]["file"].as_str().expect("file");
    let f = std::fs::File::open(m.local().join(first)).expect("shard");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .expect("parquet")
        .build()
        .expect("reader");
    for batch in reader {
        for row in hindsight::sink::batch_to_rows(&batch.expect("batch")).expect("rows") {
            assert!(
                row.source_uri.starts_with("s3://logs/raw/2024-06-01/"),
                "{}",
                row.source_uri
            );
        }
    }

    // A rerun resumes from the remote state: nothing is scored, the manifest is unchanged.
    let before = fetch("manifest.json");
    ok(&run(&moto, &args));
    let again = fetch("run_report.json");
    assert_eq!(again["chunks_committed"].as_u64(), Some(0), "{again}");
    assert!(again["chunks_already_committed"].as_u64().unwrap_or(0) > 0);
    assert_eq!(fetch("manifest.json"), before);

    // Export straight from the bucket into the bucket (Axolotl KD rows): every listed shard is
    // uploaded with the checksum the manifest names; a rerun converts nothing.
    let export_url = "s3://logs/exports/nightly-axolotl";
    let export_args = ["export", out_url, "--to", "axolotl-kd", "--out", export_url];
    assert_eq!(ok(&run(&moto, &export_args)).trim(), export_url);
    let ex = Remote::parse(export_url).expect("export");
    let ex_names: Vec<String> = ex
        .list("")
        .expect("list")
        .iter()
        .filter_map(|m| ex.relative(&m.location))
        .collect();
    for n in ["manifest.json", "README.md", "skipped.jsonl"] {
        assert!(
            ex_names.contains(&n.to_string()),
            "{n} missing: {ex_names:?}"
        );
    }
    assert!(
        !ex_names.iter().any(|n| n.ends_with(".tmp")),
        "{ex_names:?}"
    );
    let mut f = tempfile::tempfile().expect("tmp");
    ex.download_to("manifest.json", &mut f).expect("download");
    f.seek(std::io::SeekFrom::Start(0)).expect("seek");
    let em: serde_json::Value = serde_json::from_reader(f).expect("json");
    assert_eq!(em["totals"]["rows"].as_u64(), Some(rows), "{em}");
    for s in em["shards"].as_array().expect("shards") {
        let mut f = tempfile::tempfile().expect("tmp");
        ex.download_to(s["file"].as_str().expect("file"), &mut f)
            .expect("download shard");
        f.seek(std::io::SeekFrom::Start(0)).expect("seek");
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).expect("read");
        assert_eq!(
            hindsight::util::sha256_hex(&bytes),
            s["sha256"].as_str().expect("sha")
        );
    }
    let again_export = run(&moto, &export_args);
    assert!(
        String::from_utf8_lossy(&again_export.stderr).contains("0 written"),
        "{}",
        String::from_utf8_lossy(&again_export.stderr)
    );

    // Validation really looks at the bucket: a stray shard makes it fail.
    out.put_bytes("part-stray-00000.parquet", b"PAR1junk".to_vec())
        .expect("stray");
    let bad = run(&moto, &["validate", out_url]);
    assert_eq!(
        bad.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&bad.stdout)
    );

    // A missing input prefix is a clear error, not an empty dataset.
    let missing = run(
        &moto,
        &[
            "run",
            ps,
            "--input",
            "s3://logs/raw/nope/",
            "--output",
            "s3://logs/d2",
            "--no-progress",
        ],
    );
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("matched no"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );

    // Create-only puts: the store's conditional write lets exactly one caller create a key.
    assert!(scratch.put_new("claim", b"0".to_vec()).expect("put_new"));
    assert!(!scratch
        .put_new("claim", b"1".to_vec())
        .expect("put_new again"));
    assert_eq!(
        scratch.get_bytes("claim").expect("get"),
        Some(b"0".to_vec())
    );

    // A sharded run on S3 whose last task finalizes: two tasks, each reading one of the two
    // input objects; the first only records that it is done, the second finalizes.
    let sharded_url = "s3://logs/datasets/sharded";
    let task = |i: &str| {
        run(
            &moto,
            &[
                "run",
                ps,
                "--input",
                "s3://logs/raw/2024-06-01/",
                "--output",
                sharded_url,
                "--no-progress",
                "--task-index",
                i,
                "--num-tasks",
                "2",
                "--finalize-if-last",
                "--run-id",
                "night-1",
            ],
        )
    };
    let first = task("0");
    ok(&first);
    assert!(
        String::from_utf8_lossy(&first.stderr).contains("1 of 2 tasks done"),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let sharded = Remote::parse(sharded_url).expect("sharded");
    assert_eq!(sharded.head("manifest.json").expect("head"), None);
    let last = task("1");
    ok(&last);
    assert!(
        String::from_utf8_lossy(&last.stderr).contains("finalized 2 tasks"),
        "{}",
        String::from_utf8_lossy(&last.stderr)
    );
    let mut f = tempfile::tempfile().expect("tmp");
    sharded
        .download_to("manifest.json", &mut f)
        .expect("the last task wrote the manifest");
    f.seek(std::io::SeekFrom::Start(0)).expect("seek");
    let sharded_manifest: serde_json::Value = serde_json::from_reader(f).expect("json");
    assert_eq!(sharded_manifest["totals"], before["totals"]);
    // A retry of task 0 (same run) finds task 1's claim and leaves the finalize to it.
    let retry = task("0");
    ok(&retry);
    assert!(
        String::from_utf8_lossy(&retry.stderr).contains("task 1 finalizes"),
        "{}",
        String::from_utf8_lossy(&retry.stderr)
    );
    ok(&run(&moto, &["validate", sharded_url]));

    // Compaction on S3: the per-chunk shards become one object; the old ones are deleted.
    ok(&run(&moto, &["compact", sharded_url]));
    ok(&run(&moto, &["validate", sharded_url]));
    let mut f = tempfile::tempfile().expect("tmp");
    sharded
        .download_to("manifest.json", &mut f)
        .expect("manifest");
    f.seek(std::io::SeekFrom::Start(0)).expect("seek");
    let compacted: serde_json::Value = serde_json::from_reader(f).expect("json");
    assert_eq!(compacted["shards"].as_array().map(Vec::len), Some(1));
    assert_eq!(compacted["totals"]["rows"], before["totals"]["rows"]);
    let parts: Vec<String> = sharded
        .list("")
        .expect("list")
        .iter()
        .filter_map(|m| sharded.relative(&m.location))
        .filter(|n| n.starts_with("part-"))
        .collect();
    assert_eq!(parts.len(), 1, "{parts:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
