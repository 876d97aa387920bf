//! What this kernel's io_uring offers, and which of it the user allowed.
//!
//! Owns: the list of optional features with their minimum kernels, parsing of
//! `--uring-features`, and the start-up probe. Opcodes are read from IORING_REGISTER_PROBE;
//! setup flags and multishot modes cannot be listed by the kernel, so each is tried (a ring
//! set up with the flag, a multishot op submitted and cancelled): `EINVAL` means absent.
//! Must never: keep a ring or a socket open after the probe returns.

use std::fmt;
use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::str::FromStr;
use std::time::Duration;

use io_uring::{IoUring, Probe, cqueue, opcode, types};

use super::bufring::BufRing;

/// An optional io_uring feature the reactor uses when present and allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// One accept SQE yields a completion per connection (5.19).
    MultishotAccept,
    /// One recv SQE yields a completion per arrival, into provided buffers (6.0).
    MultishotRecv,
    /// Receive buffers picked by the kernel from a shared ring, so an idle connection holds
    /// no buffer (5.19).
    BufRing,
    /// Only the creating (enabling) thread submits, which lets the kernel skip locking (6.0).
    SingleIssuer,
    /// Completion work runs only when we wait for it, in our thread, in a batch (6.1).
    DeferTaskrun,
    /// Completion work is not forced on us by an interrupt; used when DEFER_TASKRUN is
    /// absent or off (5.19).
    CoopTaskrun,
    /// Sends name their socket by its entry in a table of registered files, so the kernel
    /// neither looks the fd up nor counts a reference per send (sparse tables: 5.19).
    RegisteredFiles,
}

impl Feature {
    pub const ALL: [Feature; 7] = [
        Feature::MultishotAccept,
        Feature::MultishotRecv,
        Feature::BufRing,
        Feature::SingleIssuer,
        Feature::DeferTaskrun,
        Feature::CoopTaskrun,
        Feature::RegisteredFiles,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Feature::MultishotAccept => "multishot-accept",
            Feature::MultishotRecv => "multishot-recv",
            Feature::BufRing => "buf-ring",
            Feature::SingleIssuer => "single-issuer",
            Feature::DeferTaskrun => "defer-taskrun",
            Feature::CoopTaskrun => "coop-taskrun",
            Feature::RegisteredFiles => "registered-files",
        }
    }

    pub fn min_kernel(self) -> &'static str {
        match self {
            Feature::MultishotAccept
            | Feature::BufRing
            | Feature::CoopTaskrun
            | Feature::RegisteredFiles => "5.19",
            Feature::MultishotRecv | Feature::SingleIssuer => "6.0",
            Feature::DeferTaskrun => "6.1",
        }
    }

    /// The feature this one cannot work without.
    fn requires(self) -> Option<Feature> {
        match self {
            Feature::MultishotRecv => Some(Feature::BufRing),
            Feature::DeferTaskrun => Some(Feature::SingleIssuer),
            _ => None,
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of [`Feature`]s (what the kernel has, what the user allows, what is enabled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureSet(u8);

impl FeatureSet {
    pub const NONE: FeatureSet = FeatureSet(0);

    pub fn all() -> FeatureSet {
        Feature::ALL
            .iter()
            .fold(FeatureSet::NONE, |s, f| s.with(*f))
    }

    pub fn contains(self, feature: Feature) -> bool {
        self.0 & feature.bit() != 0
    }

    #[must_use]
    pub fn with(self, feature: Feature) -> FeatureSet {
        FeatureSet(self.0 | feature.bit())
    }

    #[must_use]
    pub fn without(self, feature: Feature) -> FeatureSet {
        FeatureSet(self.0 & !feature.bit())
    }

    #[must_use]
    fn with_if(self, feature: Feature, present: bool) -> FeatureSet {
        if present { self.with(feature) } else { self }
    }

    #[must_use]
    pub fn intersect(self, other: FeatureSet) -> FeatureSet {
        FeatureSet(self.0 & other.0)
    }

    /// Drops every feature whose prerequisite is missing (multishot recv without a buffer
    /// ring, DEFER_TASKRUN without SINGLE_ISSUER), and COOP_TASKRUN when DEFER_TASKRUN
    /// supersedes it.
    #[must_use]
    pub fn consistent(self) -> FeatureSet {
        let mut set = self;
        for f in Feature::ALL {
            if f.requires().is_some_and(|r| !set.contains(r)) {
                set.0 &= !f.bit();
            }
        }
        if set.contains(Feature::DeferTaskrun) {
            set.0 &= !Feature::CoopTaskrun.bit();
        }
        set
    }

    pub fn iter(self) -> impl Iterator<Item = Feature> {
        Feature::ALL.into_iter().filter(move |f| self.contains(*f))
    }
}

impl Default for FeatureSet {
    fn default() -> FeatureSet {
        FeatureSet::all()
    }
}

/// `none`, `all`, or a comma-separated list of feature names.
impl FromStr for FeatureSet {
    type Err = String;

    fn from_str(s: &str) -> Result<FeatureSet, String> {
        match s.trim() {
            "none" | "" => return Ok(FeatureSet::NONE),
            "all" => return Ok(FeatureSet::all()),
            _ => {}
        }
        s.split(',').try_fold(FeatureSet::NONE, |set, word| {
            let word = word.trim();
            Feature::ALL
                .into_iter()
                .find(|f| f.name() == word)
                .map(|f| set.with(f))
                .ok_or_else(|| {
                    let names: Vec<_> = Feature::ALL.iter().map(|f| f.name()).collect();
                    format!(
                        "unknown io_uring feature {word:?}: use none, all, or a comma list of {}",
                        names.join(", ")
                    )
                })
        })
    }
}

impl fmt::Display for FeatureSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == FeatureSet::NONE {
            return f.write_str("none");
        }
        let names: Vec<_> = self.iter().map(Feature::name).collect();
        f.write_str(&names.join(","))
    }
}

/// Why `--io uring` cannot run here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "io_uring is unavailable: {}; run with --io epoll",
            self.0
        )
    }
}

impl std::error::Error for Unavailable {}

/// What the probe found: the features present, plus opcodes we report but do not use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probed {
    pub features: FeatureSet,
    /// IORING_OP_SEND_ZC (6.0): not used; small chat frames gain nothing from zero-copy.
    pub send_zc: bool,
    /// IORING_OP_MSG_RING (5.18): not used; cross-thread wake-ups go through the eventfd.
    pub msg_ring: bool,
}

/// Opcodes the reactor cannot do without, with the kernel that brought them.
const REQUIRED_OPCODES: [(u8, &str, &str); 6] = [
    (opcode::Accept::CODE, "ACCEPT", "5.5"),
    (opcode::Recv::CODE, "RECV", "5.6"),
    (opcode::SendMsg::CODE, "SENDMSG", "5.3"),
    (opcode::Read::CODE, "READ", "5.6"),
    (opcode::PollAdd::CODE, "POLL_ADD", "5.1"),
    (opcode::AsyncCancel::CODE, "ASYNC_CANCEL", "5.5"),
];

/// Probes the kernel. Fails when io_uring cannot be used at all, naming the cause.
pub fn probe() -> Result<Probed, Unavailable> {
    let ring = IoUring::new(8).map_err(|e| Unavailable(setup_failure(&e)))?;
    // Waiting with a timeout (IORING_ENTER_EXT_ARG) is how poll honours its deadline.
    if !ring.params().is_feature_ext_arg() {
        return Err(Unavailable(
            "the kernel lacks IORING_FEAT_EXT_ARG (needs Linux 5.11)".into(),
        ));
    }
    let mut opcodes = Probe::new();
    ring.submitter().register_probe(&mut opcodes).map_err(|e| {
        Unavailable(format!(
            "IORING_REGISTER_PROBE failed ({e}); needs Linux 5.6"
        ))
    })?;
    check_required(|op| opcodes.is_supported(op))?;

    let mut features = FeatureSet::NONE;
    type Configure = fn(&mut io_uring::Builder);
    let setup_trials: [(Feature, Configure); 3] = [
        (Feature::SingleIssuer, |b| {
            b.setup_single_issuer();
        }),
        (Feature::DeferTaskrun, |b| {
            b.setup_single_issuer().setup_defer_taskrun();
        }),
        (Feature::CoopTaskrun, |b| {
            b.setup_coop_taskrun();
        }),
    ];
    for (feature, configure) in setup_trials {
        let mut builder = IoUring::builder();
        configure(&mut builder);
        if builder.build(8).is_ok() {
            features = features.with(feature);
        }
    }
    // The trials below share one ring; any failure simply leaves the feature out.
    if let Ok(mut trial) = IoUring::new(8) {
        let files = opcodes.is_supported(opcode::FilesUpdate::CODE)
            && trial.submitter().register_files_sparse(1).is_ok();
        features = features.with_if(Feature::RegisteredFiles, files);
        let bufs = BufRing::new(2, 64).ok();
        let registered = bufs.as_ref().is_some_and(|b| b.register(&trial, 0).is_ok());
        if registered {
            features = features.with(Feature::BufRing);
        }
        let accept = trial_multishot_accept(&mut trial);
        let recv = if registered && accept.finished {
            trial_multishot_recv(&mut trial)
        } else {
            Trial::default()
        };
        features = features.with_if(Feature::MultishotAccept, accept.passed);
        features = features.with_if(Feature::MultishotRecv, recv.passed);
        if accept.finished && (recv.finished || !registered) {
            // Every trial op has completed: nothing in the kernel can touch `bufs` now.
            drop(trial);
            drop(bufs);
        } else {
            // An op may still be live: keep the ring and the buffers it could write into
            // rather than free them under the kernel. Never happens on a working kernel.
            std::mem::forget(trial);
            std::mem::forget(bufs);
        }
    }
    Ok(Probed {
        features,
        send_zc: opcodes.is_supported(opcode::SendZc::CODE),
        msg_ring: opcodes.is_supported(opcode::MsgRingData::CODE),
    })
}

fn check_required(supported: impl Fn(u8) -> bool) -> Result<(), Unavailable> {
    for (op, name, kernel) in REQUIRED_OPCODES {
        if !supported(op) {
            return Err(Unavailable(format!(
                "the kernel lacks IORING_OP_{name} (needs Linux {kernel})"
            )));
        }
    }
    Ok(())
}

/// Names the reason io_uring_setup failed.
fn setup_failure(e: &io::Error) -> String {
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok();
    explain_setup_failure(e.raw_os_error(), sysctl.as_deref().map(str::trim))
}

fn explain_setup_failure(errno: Option<i32>, io_uring_disabled: Option<&str>) -> String {
    match (errno, io_uring_disabled) {
        (Some(libc::EPERM | libc::EACCES), Some("2")) => {
            "io_uring_setup is denied: the sysctl kernel.io_uring_disabled=2 disables it".into()
        }
        (Some(libc::EPERM | libc::EACCES), Some("1")) => {
            "io_uring_setup is denied: the sysctl kernel.io_uring_disabled=1 allows it only \
             to the kernel.io_uring_group and CAP_SYS_ADMIN"
                .into()
        }
        (Some(libc::EPERM | libc::EACCES), _) => {
            "io_uring_setup is denied (EPERM): most likely a seccomp filter, such as a \
             container runtime's default profile"
                .into()
        }
        (Some(libc::ENOSYS), _) => {
            "io_uring_setup does not exist (ENOSYS): a kernel before 5.1, one built without \
             CONFIG_IO_URING, or a seccomp filter that hides it"
                .into()
        }
        (Some(libc::ENOMEM), _) => {
            "io_uring_setup ran out of memory (ENOMEM): before Linux 5.12 rings count \
             against RLIMIT_MEMLOCK (ulimit -l)"
                .into()
        }
        (Some(errno), _) => format!(
            "io_uring_setup failed: {}",
            io::Error::from_raw_os_error(errno)
        ),
        (None, _) => "io_uring_setup failed".into(),
    }
}

/// The outcome of one trial op.
#[derive(Debug, Default, Clone, Copy)]
struct Trial {
    /// The op was accepted: its first result was not `EINVAL`.
    passed: bool,
    /// Its final completion arrived, so the kernel is done with it.
    finished: bool,
}

/// Submits `entry` (user_data 1) and a cancel of it, and waits for the op's final
/// completion; a multishot flag the kernel does not know fails the op with `EINVAL` at once.
fn trial_op(ring: &mut IoUring, entry: io_uring::squeue::Entry) -> Trial {
    let cancel = opcode::AsyncCancel::new(1).build().user_data(2);
    // SAFETY: neither entry points at memory: the accept passes no address, the recv takes
    // its buffer from the registered ring, which the caller keeps until the op finished.
    let pushed = unsafe {
        let mut sq = ring.submission();
        sq.push(&entry.user_data(1)).is_ok() && sq.push(&cancel).is_ok()
    };
    if !pushed {
        return Trial {
            passed: false,
            finished: true,
        };
    }
    let mut result = None;
    let mut finished = false;
    let ts = types::Timespec::from(Duration::from_millis(500));
    for _ in 0..4 {
        let args = types::SubmitArgs::new().timespec(&ts);
        match ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
            Err(_) => break,
        }
        for cqe in ring.completion() {
            if cqe.user_data() == 1 {
                result.get_or_insert(cqe.result());
                finished |= !cqueue::more(cqe.flags());
            }
        }
        if finished {
            break;
        }
    }
    Trial {
        passed: result.is_some_and(|res| res != -libc::EINVAL),
        finished,
    }
}

fn trial_multishot_accept(ring: &mut IoUring) -> Trial {
    let Ok(listener) = TcpListener::bind("127.0.0.1:0") else {
        return Trial::default();
    };
    let entry = opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd())).build();
    trial_op(ring, entry)
}

fn trial_multishot_recv(ring: &mut IoUring) -> Trial {
    // The peer end stays open during the trial, so the recv waits instead of seeing EOF.
    let Ok((socket, _peer)) = UnixStream::pair() else {
        return Trial::default();
    };
    let entry = opcode::RecvMulti::new(types::Fd(socket.as_raw_fd()), 0).build();
    trial_op(ring, entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_feature_lists() {
        assert_eq!("none".parse::<FeatureSet>(), Ok(FeatureSet::NONE));
        assert_eq!("all".parse::<FeatureSet>(), Ok(FeatureSet::all()));
        let set: FeatureSet = "multishot-accept, buf-ring".parse().unwrap();
        assert!(set.contains(Feature::MultishotAccept));
        assert!(set.contains(Feature::BufRing));
        assert!(!set.contains(Feature::MultishotRecv));
        assert_eq!(set.to_string(), "multishot-accept,buf-ring");
        assert!("multishot-everything".parse::<FeatureSet>().is_err());
        assert_eq!(FeatureSet::NONE.to_string(), "none");
        for f in Feature::ALL {
            assert_eq!(f.name().parse::<FeatureSet>(), Ok(FeatureSet::NONE.with(f)));
            assert!(!f.min_kernel().is_empty());
        }
    }

    #[test]
    fn prerequisites_are_enforced() {
        let set: FeatureSet = "multishot-recv,defer-taskrun,coop-taskrun".parse().unwrap();
        assert_eq!(set.consistent().to_string(), "coop-taskrun");
        let set = FeatureSet::all().consistent();
        assert!(set.contains(Feature::DeferTaskrun));
        assert!(!set.contains(Feature::CoopTaskrun));
    }

    #[test]
    fn missing_opcodes_name_the_kernel() {
        let err = check_required(|op| op != opcode::SendMsg::CODE).unwrap_err();
        assert!(err.0.contains("SENDMSG") && err.0.contains("5.3"), "{err}");
        assert!(check_required(|_| true).is_ok());
        assert!(err.to_string().contains("--io epoll"));
    }

    #[test]
    fn setup_failures_name_the_cause() {
        let text = explain_setup_failure(Some(libc::EPERM), Some("2"));
        assert!(text.contains("io_uring_disabled=2"), "{text}");
        let text = explain_setup_failure(Some(libc::EPERM), Some("0"));
        assert!(text.contains("seccomp"), "{text}");
        let text = explain_setup_failure(Some(libc::ENOSYS), None);
        assert!(text.contains("ENOSYS"), "{text}");
    }

    #[test]
    fn probe_runs_here() {
        let _fds = crate::io::DESCRIPTORS.write();
        // The test machine has io_uring; what it offers is printed for the record.
        let probed = probe().expect("io_uring available on the test machine");
        eprintln!("probed: {} {probed:?}", probed.features);
    }
}
