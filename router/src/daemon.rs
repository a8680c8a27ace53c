//! Startup and shutdown of the router daemon.
//!
//! [`run`] checks and prepares everything that can fail (directories, identity, secret,
//! ports) before it reports ready, so that `weft launch` can print a precise reason and
//! exit non-zero. Then it spawns the owner, the listener and the API tasks and waits for
//! a stop request or a signal; on the way out it removes its socket and pid file.

use crate::api::{self, Api};
use crate::attachments::Attachments;
use crate::config::{self, Config, Security};
use crate::control_links::LinkContext;
use crate::dataplane_driver as dataplane;
use crate::fastdp_driver::{Availability, FastdpHandle};
use crate::ipam::allocator::RestoreError;
use crate::ipam::{Ipam, IpamConfig};
use crate::listener;
use crate::mtu::OverlayMtu;
use crate::neighbours::Neighbours;
use crate::owner::{self, DataplaneTasks, Owner};
use crate::report::RouterInfo;
use crate::supervise::Essential;
use datapath::dataplane::{Dataplane, DataplaneConfig};
use datapath::netlink::Netlink;
use datapath::tap::{Tap, TAP_NAME};
use gossip::connection_maker::{ConnectionMaker, MakerConfig};
use gossip::identity::{Identity, IdentityError};
use gossip::mesh::{LocalPeer, Mesh, MeshConfig};
use gossip::node::Node;
use gossip::peer::{display_name, PeerUid};
use gossip::psk::{self, PskError};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

/// Why the router could not start.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// A directory could not be created or is not writable.
    #[error("cannot use directory {path}: {source} (check that it is writable, or set WEFT_DATA_DIR / WEFT_RUN_DIR)")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A directory other users may write to, or not ours: its files could be swapped.
    #[error("refusing to use directory {path}: {why}")]
    UnsafeDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong and what to do.
        why: String,
    },
    /// The pid file could not be written (or is a symbolic link).
    #[error("cannot write the pid file {path}: {source} (if it is a symbolic link, remove it)")]
    PidFile {
        /// The pid file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Another router answers on our socket.
    #[error("a weft router is already running with run dir {0} (stop it with `weft stop`, or use another WEFT_RUN_DIR)")]
    AlreadyRunning(PathBuf),
    /// The identity key could not be loaded or created.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The network secret is unusable.
    #[error(transparent)]
    Secret(#[from] PskError),
    /// The bridge, the TAP device or the UDP socket could not be set up.
    #[error("cannot set up the data plane: {0} (weft needs root, /dev/net/tun and netlink)")]
    Dataplane(String),
    /// The state database, or the range persisted in it.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The `--peer-keys` list cannot be read.
    #[error("{0}")]
    PeerKeys(String),
    /// An essential task ended (a panic, or a return) while the router ran.
    #[error("{0}; the router stopped")]
    TaskEnded(crate::supervise::Ended),
    /// The persisted IPAM state cannot be restored.
    #[error("cannot restore the IPAM state in {path}: {message}")]
    Ipam {
        /// The database.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A listening socket could not be bound.
    #[error("cannot listen on {what} {addr}: {source}{hint}")]
    Listen {
        /// `TCP` or `the status address`.
        what: &'static str,
        /// The address.
        addr: String,
        /// The cause.
        source: io::Error,
        /// What to do about it.
        hint: &'static str,
    },
}

fn listen_error(what: &'static str, addr: String, source: io::Error) -> RouterError {
    let hint = if source.kind() == io::ErrorKind::AddrInUse {
        " (is another router running? stop it, or choose another port)"
    } else {
        ""
    };
    RouterError::Listen {
        what,
        addr,
        source,
        hint,
    }
}

fn make_dir(path: &Path, mode: u32) -> Result<(), RouterError> {
    let err = |source| RouterError::Dir {
        path: path.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(err)?;
    // Prove that we can write there, now rather than at the first persisted change; the
    // probe's owner is our effective uid.
    let probe = path.join(".weft-write-test");
    std::fs::write(&probe, b"").map_err(err)?;
    let euid = std::fs::metadata(&probe).map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    let _ = std::fs::remove_file(probe);
    check_dir(path, euid.map_err(err)?)
}

/// Refuses a directory that is not ours or that other users may write to: they could
/// replace the identity key, the state or the socket under us.
fn check_dir(path: &Path, euid: u32) -> Result<(), RouterError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|source| RouterError::Dir {
        path: path.to_path_buf(),
        source,
    })?;
    let unsafe_dir = |why: String| RouterError::UnsafeDir {
        path: path.to_path_buf(),
        why,
    };
    if !meta.is_dir() {
        return Err(unsafe_dir("it is not a directory".into()));
    }
    if meta.uid() != euid {
        return Err(unsafe_dir(format!(
            "it belongs to uid {}, not to this router's uid {euid}: chown {euid} {}",
            meta.uid(),
            path.display()
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "other users may write to it (mode {mode:04o}): chmod go-w {}",
            path.display()
        )));
    }
    Ok(())
}

/// Opens `path` for writing without following a symbolic link there (a link planted
/// in the run dir must not make root write elsewhere).
pub fn create_nofollow(path: &Path, append: bool) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options
        .create(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .mode(0o644);
    if append {
        options.append(true);
    } else {
        options.write(true).truncate(true);
    }
    options.open(path)
}

/// Prepares everything, then runs the router until it is told to stop.
/// `on_ready` is called with the peer name once the router accepts requests.
pub async fn run(config: Config, on_ready: impl FnOnce(&str)) -> Result<(), RouterError> {
    make_dir(&config.data_dir, 0o700)?;
    make_dir(&config.run_dir, 0o755)?;
    let socket_path = config.socket_path();
    if socket_path.exists() {
        if std::os::unix::net::UnixStream::connect(&socket_path).is_ok() {
            return Err(RouterError::AlreadyRunning(config.run_dir.clone()));
        }
        let _ = std::fs::remove_file(&socket_path);
    }
    let identity = Identity::load_or_create(&config::identity_path(&config.data_dir))?;
    let peer_keys = match &config.peer_keys {
        Some(path) => Some(crate::peer_keys::KeyList::open(path).map_err(RouterError::PeerKeys)?),
        None => None,
    };
    let store_path = config::store_path(&config.data_dir);
    let range = config.ipalloc_range;
    let opened = {
        let path = store_path.clone();
        tokio::task::spawn_blocking(move || crate::store::Store::open(&path, range))
            .await
            .expect("store task panicked")?
    };
    let crate::store::Opened {
        store,
        snapshot,
        targets: stored_targets,
        lost_ipam,
    } = opened;
    // The state file is the router's alone, whatever the umask.
    let _ = std::fs::set_permissions(&store_path, std::fs::Permissions::from_mode(0o600));
    let ipam_config = IpamConfig::new(range, config.ipalloc_init.clone());
    let (ipam, snapshot_unloadable) =
        restore_ipam(&store, &store_path, identity.id(), ipam_config, snapshot)?;
    let ipam = ipam.with_identity(identity.clone());
    let relearn = lost_ipam || snapshot_unloadable;
    let psk = match &config.security {
        Security::Secret(secret) => {
            let secret = secret.clone();
            let derived = tokio::task::spawn_blocking(move || psk::derive_psk(&secret))
                .await
                .expect("argon2 task panicked")?;
            Some(derived)
        }
        Security::NoEncryption => None,
    };
    let any = |port| format!("[::]:{port} (or 0.0.0.0:{port})");
    let (tcp, tcp_addr) = crate::underlay::tcp_listener(config.port)
        .map_err(|e| listen_error("TCP", any(config.port), e))?;
    if let Some(addr) = config.status_addr.filter(|a| !a.ip().is_loopback()) {
        warn!(
            %addr,
            "the status listener is not on a loopback address: it is read-only and answers \
             only requests whose Host is a loopback name, but anyone who can reach it sees \
             the topology and counters; prefer 127.0.0.1 and an SSH tunnel"
        );
    }
    let status = match config.status_addr {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| listen_error("the status address", addr.to_string(), e))?,
        ),
        None => None,
    };
    let metrics = match config.metrics_addr {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| listen_error("the metrics address", addr.to_string(), e))?,
        ),
        None => None,
    };
    let threads = config.dataplane_threads.clamp(1, datapath::tap::MAX_QUEUES);
    let mut udp = crate::underlay::udp_sockets(config.port, threads)
        .and_then(|(sockets, dual)| {
            sockets
                .into_iter()
                .map(|socket| configure_udp(socket, dual))
                .collect::<io::Result<Vec<_>>>()
        })
        .map_err(|e| listen_error("UDP", any(config.port), e))?;
    info!(%tcp_addr, "listening for peers");
    let mtu = config.mtu.unwrap_or_else(config::default_mtu);
    let taps = setup_bridge(mtu, !config.no_offloads, threads).await?;
    // One socket per TAP queue (fewer queues if the kernel refused several).
    udp.truncate(taps.len());
    info!(threads = taps.len(), "data-plane threads");
    let attachments = load_attachments(&config.data_dir).await;
    let unix = UnixListener::bind(&socket_path).map_err(|e| RouterError::Dir {
        path: socket_path.clone(),
        source: e,
    })?;
    // Anyone may read status; SO_PEERCRED restricts changes to root.
    let _ = std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o666));
    let pid_path = config::pid_path(&config.run_dir);
    {
        use std::io::Write;
        let pid_err = |source| RouterError::PidFile {
            path: pid_path.clone(),
            source,
        };
        create_nofollow(&pid_path, false)
            .and_then(|mut f| writeln!(f, "{}", std::process::id()))
            .map_err(pid_err)?;
    }

    let id = identity.id();
    let name = display_name(&id, &config.nickname);
    let uid = PeerUid(rand::random());
    let now = Instant::now();
    let local = LocalPeer {
        id,
        identity: identity.clone(),
        uid,
        nickname: config.nickname.clone(),
        listen_port: config.port,
    };
    let mesh_config = MeshConfig {
        discovery: config.discovery,
        ..MeshConfig::default()
    };
    let mesh = Mesh::new(local, mesh_config, rand::random(), now);
    let maker_config = MakerConfig {
        discovery: config.discovery,
        conn_limit: config.conn_limit,
        ..MakerConfig::default()
    };
    let mut maker = ConnectionMaker::new(maker_config, rand::random());
    // The peers given now, and those given before (launch arguments and `weft connect`
    // of earlier runs, less `weft forget`), which the store kept.
    let mut targets = config.peers.clone();
    targets.extend(stored_targets.iter().filter(|a| !config.peers.contains(a)));
    maker.add_targets(now, &targets, false);
    let dns = crate::dns_peers::DnsTargets::new(config.peers_from_dns.clone());
    maker.set_named(now, &dns.targets());

    let (dp_events_tx, dp_events_rx) = mpsc::unbounded_channel();
    let mut dp_config = DataplaneConfig::default();
    // While a new mesh settles, the link that survives a duplicate race (and so the
    // hash that salts the sleeve keys) can change under an offer in flight; a 1 s retry
    // instead of WireGuard's 5 s makes that cost one second, not five.
    dp_config.session.rekey_timeout = Duration::from_secs(1);
    if let Some(interval) = config.rekey_interval {
        dp_config.session.rekey_after_time = interval;
        dp_config.session.reject_after_time = interval + interval / 2;
    }
    if let Some(keepalive) = config.nat_keepalive {
        dp_config.keepalive = keepalive;
        dp_config.path_timeout = datapath::dataplane::path_timeout_for(keepalive);
    }
    // Frames share a datagram up to the size one full-size frame needs on its own, which
    // the overlay MTU was chosen to fit on the underlay.
    let max_datagram = datapath::sleeve::datagram_len(
        datapath::sleeve::DIRECT_HEADER_LEN + datapath::sleeve::ETHERNET_HEADER_LEN + mtu as usize,
    );
    dp_config.max_datagram = max_datagram;
    dp_config.mtu = u16::try_from(mtu).unwrap_or(u16::MAX);
    let dp = Dataplane::new(id, dp_config);
    let dataplane::Built {
        first: mut dp_task,
        handle: dp_handle,
        routes: routes_tx,
        tcp_datagrams: tcp_in_tx,
    } = dataplane::new(
        dp,
        taps.into_iter().zip(udp).collect(),
        Arc::new(gossip::routes::Routes::empty(id)),
        dp_events_tx,
        max_datagram,
    )
    .map_err(|e| RouterError::Dataplane(e.to_string()))?;
    let mut essential = Essential::new();
    // Each data-plane thread runs on a thread of its own: each packet is waited for and
    // handled there, with no hand-over between threads and no runtime in between.
    let not_started =
        |e: io::Error| RouterError::Dataplane(format!("cannot start its thread: {e}"));
    for (task, name) in dp_task
        .take_others()
        .into_iter()
        .zip(&DATAPLANE_THREADS[1..])
    {
        essential
            .spawn_thread(name, move || async move { task.run() })
            .map_err(not_started)?;
    }
    essential
        .spawn_thread(DATAPLANE_THREADS[0], move || async move { dp_task.run() })
        .map_err(not_started)?;
    let (fp_events_tx, fp_events_rx) = mpsc::unbounded_channel();
    let mut policy = datapath::fastdp::Policy {
        enabled: false,
        encrypted: matches!(config.security, Security::Secret(_)) && !config.plaintext_dataplane,
        trusted: config.trusted_subnets.clone(),
    };
    let (fw_task, firewall) = crate::firewall::new(crate::firewall::FirewallConfig {
        masquerade: config.masquerade,
        range: datapath::cidr::LinkAddr {
            ip: range.addr.into(),
            prefix: range.prefix,
        },
    });
    essential.spawn("firewall", fw_task.run());
    let fp_handle = if config.no_fastpath {
        info!("fast path off (--no-fastpath): every connection uses the sleeve");
        // What a router before us (killed, or with the fast path on) left behind.
        if let Ok(nl) = Netlink::new() {
            crate::fastdp_driver::teardown(&nl).await;
        }
        FastdpHandle::off(Availability::Disabled)
    } else {
        match crate::fastdp_driver::setup(
            config::BRIDGE,
            mtu,
            &config.fastdp_admit,
            firewall.clone(),
        )
        .await
        {
            Ok(kernel) => {
                policy.enabled = true;
                let (task, handle) = crate::fastdp_driver::new(
                    id,
                    kernel,
                    mtu,
                    config.fastdp_admit.clone(),
                    dp_handle.clone(),
                    fp_events_tx,
                );
                essential.spawn("fast path", task.run());
                handle
            }
            Err(e) => {
                warn!(
                    "fast path unavailable, every connection uses the sleeve: {}",
                    e.message
                );
                FastdpHandle::off(Availability::Unavailable(e.short))
            }
        }
    };
    let (overlay_mtu, link_mtu) = OverlayMtu::new(mtu);
    tokio::spawn(crate::mtu::apply(link_mtu.clone()));
    let neighbours = Neighbours::new(policy, fp_handle.enabled(), overlay_mtu);
    let tasks = DataplaneTasks {
        sleeve: dp_handle.clone(),
        sleeve_events: dp_events_rx,
        routes: routes_tx,
        fastdp: fp_handle.clone(),
        fastdp_events: fp_events_rx,
    };
    let node = Node::new(mesh, maker, now);

    let (handle, queues) = owner::channel();
    let persisted = handle.clone();
    let (persist, store_thread) = crate::store::spawn_writer(store, move |seq| {
        persisted.send(owner::Input::IpamPersisted(seq));
    });
    let ctx = LinkContext::new(identity, psk, handle.clone(), peer_keys.clone(), tcp_in_tx);
    if let Some(list) = &peer_keys {
        handle.send(owner::Input::PeerKeys(list.current().ids().clone()));
        info!(
            keys = list.current().len(),
            "--peer-keys: only listed peers may join"
        );
    }
    let info = RouterInfo {
        id,
        nickname: config.nickname.clone(),
        encryption: matches!(config.security, Security::Secret(_)),
        discovery: config.discovery,
        port: config.port,
    };
    let reclaim = config
        .reclaim_after
        .map(|after| crate::reclaim::Reclaim::new(after, id));
    if !dns.is_empty() {
        tokio::spawn(crate::dns_peers::resolve_every(
            dns.name_list(),
            handle.clone(),
        ));
    }
    essential.spawn(
        "owner",
        Owner::new(
            info,
            node,
            &ctx,
            queues,
            (tasks, neighbours),
            (Box::new(ipam), persist),
        )
        .with_dns(dns.clone(), reclaim)
        .with_conn_limit(config.conn_limit)
        .run(),
    );
    let (stop_tx, mut stop_rx) = mpsc::channel(1);
    let api = Api {
        owner: handle.clone(),
        stop: stop_tx,
        mtu: link_mtu,
        dataplane: dp_handle,
        fastdp: fp_handle,
        firewall: firewall.clone(),
        attachments,
        peer_keys: peer_keys.clone(),
        tcp_rx_dropped: ctx.tcp_rx_dropped.clone(),
    };
    essential.spawn("peer listener", listener::run(tcp, ctx));
    essential.spawn("API server", api::serve_unix(unix, api.clone()));
    if let Some(metrics) = metrics {
        essential.spawn("metrics server", api::serve_metrics(metrics, api.clone()));
    }
    if relearn {
        tokio::spawn(api::host::reclaim_attached(api.clone()));
    }
    if let Some(cidrs) = config.expose.clone() {
        tokio::spawn(api::host::expose_at_start(api.clone(), cidrs));
    }
    if let Some(status) = status {
        essential.spawn("status server", api::serve_status(status, api));
    }
    info!(peer = %name, port = config.port, "router started as {name}");
    on_ready(&name);

    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    let failed = loop {
        tokio::select! {
            _ = stop_rx.recv() => { info!("stop requested through the API"); break None }
            _ = term.recv() => { info!("SIGTERM received"); break None }
            _ = int.recv() => { info!("SIGINT received"); break None }
            _ = hup.recv() => {
                let _ = crate::api::reload_peer_keys(peer_keys.as_deref(), &handle);
            }
            ended = essential.first_end() => {
                error!(
                    task = ended.task,
                    "{ended}; the router cannot work without it: exiting (non-zero) to be restarted"
                );
                break Some(ended)
            }
        }
    };
    essential.abort("owner");
    // The owner held the store thread's only sender: the thread ends with the writes
    // left and closes weft.redb cleanly (else redb repairs it at every start).
    let closed = tokio::task::spawn_blocking(move || store_thread.join());
    if tokio::time::timeout(STORE_CLOSE_WAIT, closed)
        .await
        .is_err()
    {
        warn!("the state database did not close within {STORE_CLOSE_WAIT:?}; redb repairs it at the next start");
    }
    firewall.shutdown().await;
    if let Ok(nl) = Netlink::new() {
        crate::fastdp_driver::teardown(&nl).await;
    }
    let _ = std::fs::remove_file(&socket_path);
    let _ = std::fs::remove_file(&pid_path);
    if let Some(ended) = failed {
        return Err(RouterError::TaskEnded(ended));
    }
    info!("router stopped");
    Ok(())
}

/// How long a stopping router waits for the store thread to close `weft.redb`.
const STORE_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// IPAM from the stored snapshot. A snapshot that cannot be read (corrupt, over the size
/// limit, an unknown format) is moved aside in the store with an error logged, and IPAM
/// starts without it (`true` in the answer: the attached containers' addresses are
/// claimed again), rather than the router refusing to start for good. A snapshot of
/// another identity or range is still refused: that is a configuration to fix.
fn restore_ipam(
    store: &crate::store::Store,
    path: &Path,
    me: gossip::peer::PeerId,
    config: IpamConfig,
    snapshot: Option<Vec<u8>>,
) -> Result<(Ipam, bool), RouterError> {
    let Some(snap) = snapshot else {
        return Ok((Ipam::new(me, config, Instant::now(), rand::random()), false));
    };
    match Ipam::restore(me, config.clone(), &snap, Instant::now(), rand::random()) {
        Ok(ipam) => Ok((ipam, false)),
        Err(RestoreError::Corrupt(why)) => {
            let kept = store.set_aside_snapshot()?;
            error!(
                "the IPAM state in {} cannot be loaded ({why}); it was moved aside (kept \
                 under the key {kept:?} of that file) and IPAM starts afresh: the ring \
                 is re-learnt from the peers and the addresses of the containers still \
                 attached here are claimed again",
                path.display()
            );
            Ok((Ipam::new(me, config, Instant::now(), rand::random()), true))
        }
        Err(e) => Err(RouterError::Ipam {
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
    }
}

/// Socket buffers of the sleeve socket: room for bursts (and for garbage sent at the
/// port) without the kernel dropping real datagrams; the default is about 208 KiB.
const UDP_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// Readies the sleeve socket (`dual`: the dual-stack IPv6 one): large buffers
/// (forced past `rmem_max`, as root may), sending with DF on both families.
///
/// `IP_PMTUDISC_PROBE` (and its IPv6 twin) sets DF on every datagram but ignores the
/// kernel's path-MTU cache: the data plane measures each path with its own
/// authenticated probes, so an ICMP "fragmentation needed" (which anyone can forge)
/// never shrinks the sleeve's datagrams, and the kernel never fragments them. A
/// datagram larger than the local link still fails with `EMSGSIZE`, which the data
/// plane takes as a reason to probe again.
fn configure_udp(socket: std::net::UdpSocket, dual: bool) -> io::Result<tokio::net::UdpSocket> {
    use nix::sys::socket::{setsockopt, sockopt};
    use rustix::net::sockopt as rsockopt;
    socket.set_nonblocking(true)?;
    // On a dual-stack socket the IPv4 option governs the IPv4-mapped peers.
    rsockopt::set_ip_mtu_discover(&socket, rsockopt::Ipv4PathMtuDiscovery::PROBE)?;
    if dual {
        rsockopt::set_ipv6_mtu_discover(&socket, rsockopt::Ipv6PathMtuDiscovery::PROBE)?;
    }
    let set = |r: nix::Result<()>| r.map_err(io::Error::from);
    if set(setsockopt(&socket, sockopt::RcvBufForce, &UDP_BUFFER_BYTES)).is_err() {
        set(setsockopt(&socket, sockopt::RcvBuf, &UDP_BUFFER_BYTES))?;
    }
    if set(setsockopt(&socket, sockopt::SndBufForce, &UDP_BUFFER_BYTES)).is_err() {
        set(setsockopt(&socket, sockopt::SndBuf, &UDP_BUFFER_BYTES))?;
    }
    tokio::net::UdpSocket::from_std(socket)
}

/// The names of the data-plane threads (as essential tasks), the first one's first.
const DATAPLANE_THREADS: [&str; datapath::tap::MAX_QUEUES] = [
    "data plane",
    "data plane 2",
    "data plane 3",
    "data plane 4",
    "data plane 5",
    "data plane 6",
    "data plane 7",
    "data plane 8",
];

/// Creates the bridge (if missing) and the TAP device on it, both with the overlay MTU,
/// with `queues` queues (one, if the kernel refuses several). The bridge outlives the
/// router, so that a restart does not cut attached containers off; the TAP device
/// lives as long as the router holds it open.
async fn setup_bridge(mtu: u32, offloads: bool, queues: usize) -> Result<Vec<Tap>, RouterError> {
    let fail = |e: &dyn std::fmt::Display| RouterError::Dataplane(e.to_string());
    let nl = Netlink::new().map_err(|e| fail(&e))?;
    let bridge = nl
        .ensure_bridge(config::BRIDGE, mtu)
        .await
        .map_err(|e| fail(&e))?;
    if !offloads {
        info!("offloads off (--no-offloads): the TAP device carries plain frames");
    }
    let taps = match Tap::open_queues(TAP_NAME, queues, offloads) {
        Err(e) if queues > 1 => {
            warn!("the TAP device cannot have {queues} queues ({e}); one data-plane thread");
            Tap::open_queues(TAP_NAME, 1, offloads)
        }
        opened => opened,
    }
    .map_err(|e| fail(&e))?;
    nl.enslave(TAP_NAME, bridge, mtu)
        .await
        .map_err(|e| fail(&e))?;
    Ok(taps)
}

/// Loads the attachments registry and drops what left the bridge while we were down.
async fn load_attachments(data_dir: &Path) -> Arc<Attachments> {
    let registry = Arc::new(Attachments::load(&config::attachments_path(data_dir)));
    let reconciled = match Netlink::new() {
        Ok(nl) => crate::host_net::reconcile(&nl, &registry).await,
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = reconciled {
        warn!("cannot check attachments against the bridge: {e}");
    }
    registry
}

/// Initializes logging: always to `<run-dir>/weft.log`, and to stderr when attached.
/// `level` (`--log-level`) wins over `WEFT_LOG` (a tracing filter), which wins over
/// the default, `info`.
pub fn init_logging(run_dir: &Path, to_stderr: bool, level: Option<&str>) {
    use tracing_subscriber::{fmt, prelude::*, EnvFilter};
    let filter = match level {
        Some(level) => EnvFilter::new(level),
        None => EnvFilter::try_from_env("WEFT_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let _ = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(run_dir);
    let file = create_nofollow(&config::log_path(run_dir), true)
        .ok()
        .map(|f| {
            fmt::layer()
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(f))
        });
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let stderr = to_stderr.then(|| fmt::layer().with_ansi(ansi).with_writer(std::io::stderr));
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(file)
        .with(stderr);
    if registry.try_init().is_err() {
        warn!("logging was already initialized");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::{Cidr, InitMode};

    /// A snapshot over the decode cap (written by an older router) or corrupt used to
    /// make the router refuse to start, for good. Now it is moved aside and IPAM starts.
    #[test]
    fn unloadable_snapshot_is_moved_aside_not_a_refusal_to_start() {
        let dir = std::env::temp_dir().join(format!("weft-daemon-aside-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("weft.redb");
        let range: Cidr = "10.32.0.0/16".parse().unwrap();
        let me = gossip::peer::PeerId([1; 16]);
        let config = IpamConfig::new(range, InitMode::Observer);
        for bad in [vec![0xff; 9], vec![0; gossip::codec::MAX_DECODE_LEN + 1]] {
            let _ = std::fs::remove_file(&path);
            let opened = crate::store::Store::open(&path, range).unwrap();
            opened.store.write_snapshot(&bad).unwrap();
            drop(opened);
            let opened = crate::store::Store::open(&path, range).unwrap();
            let snap = opened.snapshot.clone();
            let ipam = restore_ipam(&opened.store, &path, me, config.clone(), snap);
            assert!(matches!(ipam, Ok((_, true))), "{:?}", ipam.err());
            drop(opened);
            let opened = crate::store::Store::open(&path, range).unwrap();
            assert!(opened.snapshot.is_none(), "moved aside");
        }
        // Another identity's snapshot is still refused, and kept where it is.
        let _ = std::fs::remove_file(&path);
        let other = Ipam::new(
            gossip::peer::PeerId([2; 16]),
            config.clone(),
            Instant::now(),
            1,
        );
        let theirs = other.snapshot().encode().unwrap();
        let opened = crate::store::Store::open(&path, range).unwrap();
        opened.store.write_snapshot(&theirs).unwrap();
        let refused = restore_ipam(&opened.store, &path, me, config, Some(theirs.clone()));
        assert!(matches!(refused, Err(RouterError::Ipam { .. })));
        drop(opened);
        let opened = crate::store::Store::open(&path, range).unwrap();
        assert_eq!(opened.snapshot, Some(theirs));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
