//! End-to-end tests of the ways Weft is installed (`deploy/`): the container image
//! (built offline with `deploy/build-image.sh`, run with podman: `weft version`, then
//! two containers in two host namespaces that mesh and install the CNI plugin), the
//! Kubernetes manifest (validated against three Kubernetes releases' API schemas), the
//! systemd unit (`systemd-analyze verify`) and the Debian package (installed into a
//! throwaway Debian root, run, removed and purged without leftovers).
//!
//! Root only; a missing tool is a failure that says what to install, never a skip.
//! Podman uses its own storage under target/ (kept between runs: the base image is a
//! cache) and only host or namespace networking: it never makes a network of its own.

mod common;

use common::netns::root_links;
use common::weft::WEFT;
use common::{require_root, run_ok, run_with_timeout, tail, wait_until, Net};
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// The image the tests build (in their own podman storage).
const IMAGE: &str = "localhost/weft:test";
/// Kubernetes releases whose API schemas the manifest must satisfy.
const KUBERNETES: [&str; 3] = ["1.32.0", "1.33.0", "1.34.0"];

/// Panics unless `tool` is on PATH, saying which Debian package has it.
fn require_tool(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", "command -v \"$1\" >/dev/null", "sh", tool])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "`{tool}` is missing; install it with `apt-get install {package}` \
         (scripts/test.sh installs everything the tests need)"
    );
}

/// target/ (the parent of cargo's tmp dir for tests).
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR has a parent")
        .to_path_buf()
}

/// The tests' podman storage: target/deploy/podman/{root,runroot}.
fn podman_dir() -> PathBuf {
    target_dir().join("deploy").join("podman")
}

/// `podman` on the tests' storage, with the runtime settings of deploy/build-image.sh
/// (runc and cgroupfs work with every cgroup layout, systemd or not).
fn podman() -> Command {
    let dir = podman_dir();
    let mut cmd = Command::new("podman");
    cmd.args([
        "--runtime",
        "runc",
        "--cgroup-manager",
        "cgroupfs",
        "--root",
    ])
    .arg(dir.join("root"))
    .arg("--runroot")
    .arg(dir.join("runroot"));
    cmd
}

/// `--ulimit` options that keep this process's own limits: podman's defaults for a
/// rootful container are larger, and raising limits fails without CAP_SYS_RESOURCE.
fn limits() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/limits").expect("read /proc/self/limits");
    let hard = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .expect("Max open files in /proc/self/limits");
    let nofile = if hard == "unlimited" { "1048576" } else { hard };
    vec![
        "--ulimit".into(),
        format!("nofile={nofile}:{nofile}"),
        "--ulimit".into(),
        "nproc=4096:4096".into(),
    ]
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `deploy/build-image.sh --base-only` once: the debootstrap'ed Debian 12 root
/// file system as a tarball (cached under target/deploy/). Returns its path.
fn base_tarball() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        require_tool("debootstrap", "debootstrap");
        let start = Instant::now();
        let out = run_with_timeout(
            Command::new(Path::new(REPO).join("deploy/build-image.sh"))
                .arg("--base-only")
                .env("WEFT_BASE_CACHE", target_dir().join("deploy")),
            Duration::from_secs(900),
        );
        assert!(
            out.status.success(),
            "deploy/build-image.sh --base-only failed ({}):\n{}{}",
            out.status,
            stdout(&out),
            stderr(&out)
        );
        let path = PathBuf::from(stdout(&out).trim());
        assert!(path.is_file(), "no base tarball at {}", path.display());
        println!(
            "deploy: base root file system {} ready in {:.1} s",
            path.display(),
            start.elapsed().as_secs_f64()
        );
        path
    })
}

/// Builds the image once per test run with deploy/build-image.sh from the `weft`
/// binary under test, without internet access, and drops the previous build.
fn image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        require_tool("podman", "podman");
        require_tool("runc", "runc");
        base_tarball();
        let start = Instant::now();
        let out = run_with_timeout(
            Command::new(Path::new(REPO).join("deploy/build-image.sh"))
                .args(["--tag", IMAGE, "--podman-root"])
                .arg(podman_dir())
                .arg(WEFT)
                .env("WEFT_BASE_CACHE", target_dir().join("deploy")),
            Duration::from_secs(900),
        );
        assert!(
            out.status.success(),
            "deploy/build-image.sh failed ({}):\n{}\n{}",
            out.status,
            tail(&stdout(&out), 30),
            stderr(&out)
        );
        println!(
            "deploy: image {IMAGE} built offline in {:.1} s",
            start.elapsed().as_secs_f64()
        );
        // The image of the previous run is now untagged: remove it (our storage only).
        let _ = run_with_timeout(
            podman().args(["image", "prune", "--force"]),
            Duration::from_secs(120),
        );
    });
    IMAGE
}

#[test]
fn image_builds_offline_and_prints_the_version() {
    require_root();
    let links_before = root_links();
    let image = image();
    let out = run_ok(
        podman()
            .args(["run", "--rm", "--privileged", "--network", "host"])
            .args(limits())
            .args([image, "weft", "version"]),
    );
    let want = run_ok(Command::new(WEFT).arg("version"));
    assert!(
        stdout(&want).starts_with("weft "),
        "weft version printed {:?}",
        stdout(&want)
    );
    assert_eq!(
        stdout(&out),
        stdout(&want),
        "`weft version` in the image differs from the binary under test"
    );
    // The tools the image promises, from the Debian packages of the base.
    let tools = run_ok(
        podman()
            .args(["run", "--rm", "--network", "none"])
            .args(limits())
            .args([image, "sh", "-c", "nft --version && ip -V"]),
    );
    let text = stdout(&tools);
    assert!(
        text.contains("nftables") && text.contains("iproute2"),
        "nft or ip missing in the image: {text}"
    );
    // Without the node's CNI directories mounted the entrypoint refuses, saying why.
    let bare = run_with_timeout(
        podman()
            .args(["run", "--rm", "--network", "none"])
            .args(limits())
            .args([image, "--no-encryption"]),
        Duration::from_secs(60),
    );
    assert_eq!(
        bare.status.code(),
        Some(1),
        "entrypoint without mounts: {bare:?}"
    );
    assert!(
        stderr(&bare).contains("/host/opt/cni/bin is missing: mount the node's CNI directory"),
        "entrypoint without mounts said: {}",
        stderr(&bare)
    );
    assert_eq!(
        root_links(),
        links_before,
        "podman must not add links to the root namespace"
    );
}

/// A container we started, removed with `podman rm -f` (by its name, unique to the
/// test) when dropped; its log is printed if the test failed.
struct Container {
    name: String,
}

impl Container {
    fn logs(&self) -> String {
        let out = run_with_timeout(podman().args(["logs", &self.name]), Duration::from_secs(30));
        format!("{}{}", stdout(&out), stderr(&out))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "deploy: log of container {}:\n{}",
                self.name,
                tail(&self.logs(), 40)
            );
        }
        let out = run_with_timeout(
            podman().args(["rm", "--force", "--time", "0", &self.name]),
            Duration::from_secs(60),
        );
        if !out.status.success() {
            eprintln!("deploy: podman rm {} failed: {}", self.name, stderr(&out));
        }
    }
}

/// Per-host directories that stand for the node's /opt/cni/bin and /etc/cni/net.d.
fn cni_dirs(net: &Net, host: usize) -> (PathBuf, PathBuf) {
    let base = net.dir().join(format!("h{host}-cni"));
    let (bin, conf) = (base.join("bin"), base.join("net.d"));
    for d in [&bin, &conf] {
        std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
    }
    (bin, conf)
}

/// Runs the image on host `hX` as the DaemonSet does: in the host's network namespace,
/// not privileged, only NET_ADMIN and /dev/net/tun, a read-only root file system, the
/// secret, run, data and CNI directories mounted from the host.
fn run_container(net: &Net, host: usize, secret: &Path, launch: &[String]) -> Container {
    let h = net.host(host);
    let (bin, conf) = cni_dirs(net, host);
    let name = format!("weft-{}h{host}", net.prefix());
    let mount = |from: &Path, to: &str| format!("{}:{to}", from.display());
    let mut cmd = podman();
    cmd.args(["run", "--detach", "--name", &name])
        .args(["--network", &format!("ns:/run/netns/{}", h.ns)])
        .args(["--cap-drop", "all", "--cap-add", "NET_ADMIN"])
        .args(["--device", "/dev/net/tun"])
        .args(["--read-only", "--read-only-tmpfs=false"])
        .args(["--volume", &mount(&h.run_dir, "/run/weft")])
        .args(["--volume", &mount(&h.data_dir, "/var/lib/weft")])
        .args(["--volume", &mount(&bin, "/host/opt/cni/bin")])
        .args(["--volume", &mount(&conf, "/host/etc/cni/net.d")])
        .args([
            "--volume",
            &format!("{}:ro", mount(secret, "/etc/weft/secret")),
        ])
        .args(limits())
        .arg(image())
        .args(["--password-file", "/etc/weft/secret"])
        .args(["--nickname", &format!("h{host}")])
        .args(launch);
    run_ok(&mut cmd);
    let container = Container { name };
    let ready = wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
        net.weft(host, &["status"]).status.success()
    });
    if ready.is_none() {
        panic!(
            "h{host}: the container's router did not answer `weft status` within 60 s; log:\n{}",
            tail(&container.logs(), 40)
        );
    }
    container
}

/// Asserts the plugin files the entrypoint installed into host `hX`'s CNI directories:
/// `weft-net` a copy of the binary, `weft-ipam` a relative link to it, the conflist,
/// and both answering `CNI_COMMAND=VERSION` when run from the host.
fn assert_plugin_installed(net: &Net, host: usize) {
    let (bin, conf) = cni_dirs(net, host);
    let plugin = bin.join("weft-net");
    let meta = std::fs::symlink_metadata(&plugin)
        .unwrap_or_else(|e| panic!("h{host}: no {}: {e}", plugin.display()));
    assert!(
        meta.file_type().is_file(),
        "h{host}: weft-net must be a file (a link into the container would not resolve on the host)"
    );
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o755,
        "h{host}: weft-net mode"
    );
    assert!(
        std::fs::read(&plugin).expect("read weft-net") == std::fs::read(WEFT).expect("read weft"),
        "h{host}: weft-net is not a copy of the weft binary in the image"
    );
    assert_eq!(
        std::fs::read_link(bin.join("weft-ipam")).ok().as_deref(),
        Some(Path::new("weft-net")),
        "h{host}: weft-ipam must be a relative link to weft-net"
    );
    let text = std::fs::read_to_string(conf.join("10-weft.conflist"))
        .unwrap_or_else(|e| panic!("h{host}: no 10-weft.conflist: {e}"));
    let conflist: Value = serde_json::from_str(&text).expect("conflist is JSON");
    assert_eq!(conflist["plugins"][0]["type"], "weft-net", "{text}");
    for name in ["weft-net", "weft-ipam"] {
        let out = run_with_timeout(
            Command::new(bin.join(name)).env("CNI_COMMAND", "VERSION"),
            Duration::from_secs(10),
        );
        assert!(out.status.success(), "h{host}: {name} VERSION: {out:?}");
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("h{host}: {name} VERSION printed no JSON ({e}): {out:?}"));
        let supported = v["supportedVersions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            supported.iter().any(|s| s == "1.0.0"),
            "h{host}: {name} VERSION: {v}"
        );
    }
}

/// Host `hX`'s overlay address, from the `weft:expose MAC CIDR` line of `weft ps`.
fn exposed_addr(net: &Net, host: usize) -> Ipv4Addr {
    let mut addr = None;
    wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let ps = stdout(&net.weft(host, &["ps"]));
        addr = ps
            .lines()
            .find(|l| l.starts_with("weft:expose "))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|cidr| cidr.split('/').next()?.parse().ok());
        addr.is_some()
    });
    addr.unwrap_or_else(|| panic!("h{host}: no weft:expose line in weft ps"))
}

/// `CNI_COMMAND=ADD` of the plugin installed in host `hX`'s CNI bin dir, run in that
/// host with the network configuration the entrypoint wrote, for namespace `pod`
/// (container id `pod`, interface eth0). Returns the pod's IPv4 address.
fn cni_add(net: &Net, host: usize, pod: &str) -> Ipv4Addr {
    let h = net.host(host);
    let (bin, conf) = cni_dirs(net, host);
    let text = std::fs::read_to_string(conf.join("10-weft.conflist")).expect("read conflist");
    let list: Value = serde_json::from_str(&text).expect("conflist JSON");
    // libcni hands each plugin of a list its own entry with the list's version and name.
    let mut plugin = list["plugins"][0].clone();
    plugin["cniVersion"] = list["cniVersion"].clone();
    plugin["name"] = list["name"].clone();
    let input = net.dir().join(format!("{pod}.json"));
    std::fs::write(&input, plugin.to_string()).expect("write plugin input");
    let out = run_with_timeout(
        Command::new("ip")
            .args(["netns", "exec", &h.ns, "sh", "-c", "exec \"$0\" <\"$1\""])
            .arg(bin.join("weft-net"))
            .arg(&input)
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", pod)
            .env("CNI_NETNS", format!("/run/netns/{pod}"))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", &bin)
            .env("WEFT_RUN_DIR", &h.run_dir),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "h{host}: weft-net ADD failed ({}): {}{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    println!(
        "deploy: h{host}: weft-net ADD for {pod}: {}",
        stdout(&out).trim()
    );
    let result: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("h{host}: ADD printed no JSON ({e}): {}", stdout(&out)));
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str()?.split('/').next()?.parse().ok())
        .next()
        .unwrap_or_else(|| panic!("h{host}: no IPv4 address in the ADD result {result}"))
}

#[test]
fn two_containers_in_two_hosts_mesh_and_install_the_plugin() {
    let links_before = root_links();
    let mut net = Net::new("deploy", 2);
    image();
    let secret = net.new_secret("secret");
    let h1 = net.host(1).addr.to_string();
    // As the DaemonSet: `--expose` takes the host's overlay address from IPAM.
    let c1 = run_container(&net, 1, &secret, &["--expose".into()]);
    let c2 = run_container(&net, 2, &secret, &["--expose".into(), h1]);
    let took = net.wait_established(&[(1, 1), (2, 1)]);
    println!(
        "deploy: two containers meshed (encrypted, UDP confirmed) in {:.2} s",
        took.as_secs_f64()
    );
    // The data plane works with only NET_ADMIN: h1 reaches h2's overlay address through
    // the TAP devices and the encrypted tunnel.
    let far = exposed_addr(&net, 2);
    let pinged = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        net.ping(&net.host(1).ns, far)
    });
    assert!(
        pinged.is_some(),
        "h1 cannot ping h2's overlay address {far}"
    );
    for host in [1, 2] {
        assert_plugin_installed(&net, host);
    }
    // What a node's container runtime does next: run the installed plugin, on the host,
    // for a new pod. It reaches the containerized router through the mounted run dir
    // and gets the pod an address from the router's IPAM; the pods then ping across.
    let pod1 = net.add_bare_pod(1, 1);
    let pod2 = net.add_bare_pod(2, 1);
    let addr1 = cni_add(&net, 1, &pod1);
    let addr2 = cni_add(&net, 2, &pod2);
    assert_ne!(addr1, addr2, "IPAM gave both pods the same address");
    let pinged = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        net.ping(&pod1, addr2)
    });
    assert!(
        pinged.is_some(),
        "pod on h1 ({addr1}) cannot ping pod on h2 ({addr2})"
    );
    drop((c1, c2));
    drop(net);
    assert_eq!(
        root_links(),
        links_before,
        "podman must not add links to the root namespace"
    );
}

/// The kubernetes-validate from target/deploy/venv (scripts/test.sh installs it there),
/// or from PATH.
fn kubernetes_validate() -> PathBuf {
    let venv = target_dir().join("deploy/venv/bin/kubernetes-validate");
    if venv.is_file() {
        return venv;
    }
    let found = Command::new("sh")
        .args(["-c", "command -v kubernetes-validate"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(stdout(&o).trim()));
    found.unwrap_or_else(|| {
        panic!(
            "kubernetes-validate is missing: scripts/test.sh installs it; by hand: \
             python3 -m venv {0} && {0}/bin/pip install kubernetes-validate==1.34.1",
            target_dir().join("deploy/venv").display()
        )
    })
}

/// `kubernetes-validate --strict -k VERSION FILE`.
fn validate(tool: &Path, version: &str, file: &Path) -> Output {
    run_with_timeout(
        Command::new(tool)
            .args(["--strict", "-k", version])
            .arg(file),
        Duration::from_secs(120),
    )
}

/// The manifest's documents as JSON, read with the validator's own YAML parser.
fn manifest_documents(tool: &Path, file: &Path) -> Vec<Value> {
    let python = tool.with_file_name("python3");
    let python = if python.is_file() {
        python
    } else {
        PathBuf::from("python3")
    };
    let out = run_ok(
        Command::new(python)
            .args([
                "-c",
                "import json, sys, yaml\n\
                 print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))",
            ])
            .arg(file),
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("manifest as JSON")
}

#[test]
fn manifest_validates_for_three_kubernetes_releases() {
    require_root();
    let tool = kubernetes_validate();
    let manifest = Path::new(REPO).join("deploy/kubernetes/weft.yaml");
    for version in KUBERNETES {
        let out = validate(&tool, version, &manifest);
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            out.status.success(),
            "the manifest fails Kubernetes {version}'s schema:\n{text}"
        );
        for resource in [
            "namespace/weft",
            "configmap/weft-settings",
            "serviceaccount/weft",
            "service/weft-peers",
            "daemonset/weft",
        ] {
            assert!(
                text.contains(&format!("passed for resource {resource}")),
                "Kubernetes {version}: {resource} not validated:\n{text}"
            );
        }
    }
    // The validator can fail: a wrong type in the DaemonSet is rejected by each release.
    let text = std::fs::read_to_string(&manifest).expect("read manifest");
    let broken = target_dir().join(format!("deploy/broken-{}.yaml", std::process::id()));
    std::fs::write(
        &broken,
        text.replacen("hostNetwork: true", "hostNetwork: \"yes\"", 1),
    )
    .expect("write broken manifest");
    for version in KUBERNETES {
        let out = validate(&tool, version, &broken);
        assert!(
            !out.status.success(),
            "Kubernetes {version}: a string hostNetwork passed validation"
        );
    }
    let _ = std::fs::remove_file(&broken);

    // What the schema cannot say.
    let docs = manifest_documents(&tool, &manifest);
    let find = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in the manifest"))
    };
    assert_eq!(
        docs[0]["kind"], "Namespace",
        "the Namespace must come first"
    );
    let svc = &find("Service")["spec"];
    assert_eq!(
        svc["clusterIP"], "None",
        "the peers Service must be headless"
    );
    assert_eq!(svc["publishNotReadyAddresses"], true);
    assert_eq!(svc["ports"][0]["port"], 6783);
    let pod = &find("DaemonSet")["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["tolerations"][0]["operator"], "Exists");
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["privileged"], false);
    assert_eq!(
        c["securityContext"]["capabilities"]["add"],
        serde_json::json!(["NET_ADMIN"])
    );
    let probe = &c["readinessProbe"]["httpGet"];
    assert_eq!(
        (&probe["host"], &probe["port"], &probe["path"]),
        (&"127.0.0.1".into(), &6782.into(), &"/status".into()),
        "the readiness probe must ask the status listener on loopback"
    );
    let args: Vec<&str> = c["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for want in [
        "--password-file=/etc/weft/secret",
        "--peers-from-dns=weft-peers.weft.svc.cluster.local",
        "--ipalloc-range=$(IPALLOC_RANGE)",
        "--mtu=$(MTU)",
        "--reclaim-after=$(RECLAIM_AFTER)",
    ] {
        assert!(args.contains(&want), "DaemonSet args lack {want}: {args:?}");
    }
    // Every $(VAR) in the args is defined, by the settings ConfigMap or `env`.
    let settings = &find("ConfigMap")["data"];
    let env: BTreeSet<&str> = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    for arg in &args {
        if let Some((_, rest)) = arg.split_once("$(") {
            let var = rest.split(')').next().unwrap_or("");
            assert!(
                settings.get(var).is_some() || env.contains(var),
                "{arg}: $({var}) is defined neither in the ConfigMap nor in env"
            );
        }
    }
    let secret = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "secret")
        .expect("a secret volume");
    assert_eq!(secret["secret"]["secretName"], "weft-secret");
}

/// A root for `systemd-analyze verify --root`: the system's units (for the targets the
/// unit names) and the unit with a `weft` at /usr/bin/weft, so that nothing of the real
/// system is read or changed.
fn unit_root(dir: &Path, unit_text: &str) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    for d in ["usr/bin", "usr/lib/systemd", "etc/systemd/system"] {
        std::fs::create_dir_all(dir.join(d)).expect("create unit root");
    }
    run_ok(
        Command::new("cp")
            .args(["-a", "/usr/lib/systemd/system"])
            .arg(dir.join("usr/lib/systemd/")),
    );
    std::os::unix::fs::symlink("usr/lib", dir.join("lib")).expect("lib link");
    std::fs::copy("/bin/true", dir.join("usr/bin/weft")).expect("copy a stand-in weft");
    let unit = dir.join("etc/systemd/system/weft.service");
    std::fs::write(&unit, unit_text).expect("write unit");
    unit
}

fn verify_unit(dir: &Path, unit: &Path) -> Output {
    run_with_timeout(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(format!("--root={}", dir.display()))
            .arg(unit),
        Duration::from_secs(60),
    )
}

#[test]
fn systemd_unit_passes_verify() {
    require_root();
    require_tool("systemd-analyze", "systemd");
    let text = std::fs::read_to_string(Path::new(REPO).join("deploy/systemd/weft.service"))
        .expect("read deploy/systemd/weft.service");
    for want in [
        "Type=simple",
        "Restart=on-failure",
        "LoadCredential=secret:/etc/weft/secret",
        "--password-file ${CREDENTIALS_DIRECTORY}/secret",
        "EnvironmentFile=-/etc/default/weft",
        "DeviceAllow=/dev/net/tun rw",
    ] {
        assert!(text.contains(want), "the unit lacks {want:?}");
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("unit-{}", std::process::id()));
    let unit = unit_root(&dir, &text);
    let out = verify_unit(&dir, &unit);
    let said = format!("{}{}", stdout(&out), stderr(&out));
    // verify exits 0 on some problems (it logs them and ignores the line): both count.
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify found problems ({}):\n{said}",
        out.status
    );
    // The check can fail: a misspelt setting is reported.
    let unit = unit_root(
        &dir,
        &text.replace("Restart=on-failure", "Restart=sometimes"),
    );
    let out = verify_unit(&dir, &unit);
    assert!(
        !format!("{}{}", stdout(&out), stderr(&out))
            .trim()
            .is_empty(),
        "systemd-analyze verify accepted Restart=sometimes"
    );
    // How exposed the service is (systemd's scale: below 5 is "OK").
    let unit = unit_root(&dir, &text);
    let out = run_ok(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true"])
            .arg(format!("--root={}", dir.display()))
            .arg(&unit),
    );
    let report = stdout(&out);
    let level: f64 = report
        .lines()
        .find_map(|l| l.split("exposure level for weft.service:").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{}", tail(&report, 5)));
    println!("deploy: systemd-analyze security: exposure level {level}");
    assert!(level < 5.0, "the unit is too exposed ({level}):\n{report}");
    std::fs::remove_dir_all(&dir).expect("remove unit root");
}

/// A throwaway Debian 12 root (the debootstrap'ed base), removed when dropped.
struct Chroot {
    dir: PathBuf,
}

impl Chroot {
    fn new() -> Chroot {
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("chroot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create chroot dir");
        run_ok(
            Command::new("tar")
                .args(["--numeric-owner", "-xf"])
                .arg(base_tarball())
                .arg("-C")
                .arg(&dir),
        );
        Chroot { dir }
    }

    /// `dpkg --root=DIR args`: maintainer scripts run chrooted into DIR.
    fn dpkg(&self, args: &[&str]) -> Output {
        run_with_timeout(
            Command::new("dpkg")
                .arg(format!("--root={}", self.dir.display()))
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive"),
            Duration::from_secs(300),
        )
    }

    fn dpkg_ok(&self, args: &[&str]) -> String {
        let out = self.dpkg(args);
        assert!(
            out.status.success(),
            "dpkg {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }

    /// A path inside the root; `path` is absolute in the root (not resolved through
    /// links of the real system).
    fn path(&self, path: &str) -> PathBuf {
        self.dir.join(path.trim_start_matches('/'))
    }

    fn exists(&self, path: &str) -> bool {
        std::fs::symlink_metadata(self.path(path)).is_ok()
    }

    /// Runs `program args` chrooted.
    fn run(&self, program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        run_with_timeout(
            Command::new("chroot")
                .arg(&self.dir)
                .arg(program)
                .args(args)
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .envs(env.iter().copied())
                .stdin(Stdio::null()),
            Duration::from_secs(30),
        )
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("deploy: remove {}: {e}", self.dir.display());
        }
    }
}

#[test]
fn debian_package_installs_runs_and_leaves_nothing_behind() {
    require_root();
    for (tool, package) in [
        ("dpkg-deb", "dpkg"),
        ("chroot", "coreutils"),
        ("tar", "tar"),
    ] {
        require_tool(tool, package);
    }
    let host_had_weft = run_with_timeout(
        Command::new("dpkg").args(["-s", "weft"]),
        Duration::from_secs(30),
    )
    .status
    .success();
    let out_dir = target_dir().join(format!("deploy/deb-{}", std::process::id()));
    let start = Instant::now();
    let built = run_with_timeout(
        Command::new(Path::new(REPO).join("deploy/build-deb.sh"))
            .arg(WEFT)
            .arg(&out_dir),
        Duration::from_secs(600),
    );
    assert!(
        built.status.success(),
        "deploy/build-deb.sh failed ({}):\n{}{}",
        built.status,
        stdout(&built),
        stderr(&built)
    );
    let deb = stdout(&built).trim().to_string();
    println!(
        "deploy: built {deb} in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let root = Chroot::new();

    let listed: Vec<String> = {
        let out = run_ok(Command::new("dpkg-deb").args(["-c", &deb]));
        stdout(&out)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .map(|p| p.trim_start_matches('.').trim_end_matches('/').to_string())
            .filter(|p| !p.is_empty())
            .collect()
    };
    // What existed before (directories of other packages stay after removal).
    let existed: BTreeSet<String> = listed.iter().filter(|p| root.exists(p)).cloned().collect();

    root.dpkg_ok(&["-i", &deb]);
    let files: Vec<String> = root
        .dpkg_ok(&["-L", "weft"])
        .lines()
        .map(str::to_string)
        .filter(|p| p != "/.")
        .collect();
    for want in [
        "/usr/bin/weft",
        "/lib/systemd/system/weft.service",
        "/etc/default/weft",
        "/opt/cni/bin/weft-net",
        "/opt/cni/bin/weft-ipam",
    ] {
        assert!(
            files.iter().any(|f| f == want),
            "dpkg -L weft lacks {want}: {files:?}"
        );
        assert!(root.exists(want), "{want} not installed");
    }
    let version = root.run("/usr/bin/weft", &["version"], &[]);
    let want = run_ok(Command::new(WEFT).arg("version"));
    assert!(
        version.status.success(),
        "installed weft version: {version:?}"
    );
    assert_eq!(stdout(&version), stdout(&want), "installed weft version");
    let cni = root.run("/opt/cni/bin/weft-net", &[], &[("CNI_COMMAND", "VERSION")]);
    assert!(
        cni.status.success() && stdout(&cni).contains("supportedVersions"),
        "the installed CNI link does not answer VERSION: {cni:?}"
    );
    let etc_weft = std::fs::metadata(root.path("/etc/weft")).expect("postinst makes /etc/weft");
    assert_eq!(
        etc_weft.permissions().mode() & 0o777,
        0o700,
        "/etc/weft mode"
    );
    // What an admin and the router add: the secret, the identity key.
    std::fs::write(root.path("/etc/weft/secret"), "0".repeat(64)).expect("write secret");
    std::fs::create_dir_all(root.path("/var/lib/weft")).expect("state dir");
    std::fs::write(root.path("/var/lib/weft/identity.key"), "key").expect("write key");

    // Remove: everything goes but the conffile. (A directory that existed before
    // and that no package owns, like the base's /opt, may go too: dpkg removes a
    // package's directories once empty.)
    root.dpkg_ok(&["-r", "weft"]);
    for f in files.iter().filter(|f| !existed.contains(*f)) {
        let keep = f == "/etc/default/weft";
        let state = if keep { "is gone" } else { "is left behind" };
        assert_eq!(root.exists(f), keep, "after dpkg -r: {f} {state}");
    }
    let status = root.dpkg(&["-s", "weft"]);
    assert!(
        stdout(&status).contains("Status: deinstall ok config-files"),
        "after dpkg -r: {}",
        stdout(&status)
    );
    // Purge: the conffile, the secret directory and the state go too.
    root.dpkg_ok(&["--purge", "weft"]);
    for f in files
        .iter()
        .map(String::as_str)
        .chain(["/etc/weft", "/var/lib/weft"])
        .filter(|f| !existed.contains(*f))
    {
        assert!(!root.exists(f), "after dpkg --purge: {f} is left behind");
    }
    let status = root.dpkg(&["-s", "weft"]);
    assert!(
        !status.status.success(),
        "after purge dpkg -s weft still knows it: {}",
        stdout(&status)
    );
    // The real system was not touched.
    let host_has_weft = run_with_timeout(
        Command::new("dpkg").args(["-s", "weft"]),
        Duration::from_secs(30),
    )
    .status
    .success();
    assert_eq!(
        host_has_weft, host_had_weft,
        "the test changed the real system's packages"
    );
    drop(root);
    std::fs::remove_dir_all(&out_dir).expect("remove the package dir");
}
