//! CPU accounting for honest numbers, and the open-file limit.
//!
//! Owns: the loader's own CPU time (getrusage RUSAGE_SELF), a server's CPU time read from
//! /proc/PID/stat and /proc/PID/task/*/stat, and raising RLIMIT_NOFILE.
//! Must never: fail a run because /proc is unreadable (the server may exit first): server
//! CPU is then simply absent from the results.

#![allow(unsafe_code)]

use std::fs;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// User and system CPU time, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuTime {
    pub user_us: u64,
    pub sys_us: u64,
}

impl CpuTime {
    pub fn total_us(self) -> u64 {
        self.user_us + self.sys_us
    }

    pub fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user_us: self.user_us.saturating_sub(earlier.user_us),
            sys_us: self.sys_us.saturating_sub(earlier.sys_us),
        }
    }
}

/// This process's CPU time so far, all threads.
pub fn self_cpu() -> CpuTime {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` points to writable memory of the size getrusage fills; RUSAGE_SELF is
    // a valid `who`; on success the struct is fully initialised (and it was zeroed before).
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return CpuTime::default();
    }
    // SAFETY: zero-initialised and, on success, written by the kernel: a valid rusage.
    let usage = unsafe { usage.assume_init() };
    let us = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000 + tv.tv_usec as u64;
    CpuTime {
        user_us: us(usage.ru_utime),
        sys_us: us(usage.ru_stime),
    }
}

/// One server thread's CPU over the measured interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadCpu {
    pub tid: u32,
    pub name: String,
    pub user_us: u64,
    pub sys_us: u64,
}

/// A snapshot of a process's CPU, whole and per thread.
#[derive(Debug, Clone, Default)]
pub struct ProcessCpu {
    pub total: CpuTime,
    pub threads: Vec<ThreadCpu>,
}

/// Parses utime and stime (fields 14 and 15, in clock ticks) and the name (field 2) from a
/// /proc/.../stat line. The name is in parentheses and may itself contain spaces and
/// parentheses, so the fields are counted from the *last* `)`.
pub fn parse_stat(line: &str) -> Option<(String, u64, u64)> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let name = line.get(open + 1..close)?.to_string();
    let mut fields = line.get(close + 1..)?.split_whitespace();
    // After ')': field 3 (state) is the first; utime is field 14, so skip 11.
    let utime = fields.nth(11)?.parse().ok()?;
    let stime = fields.next()?.parse().ok()?;
    Some((name, utime, stime))
}

fn ticks_to_us(ticks: u64) -> u64 {
    let per_sec = rustix::param::clock_ticks_per_second().max(1);
    ticks * 1_000_000 / per_sec
}

/// Reads the CPU time of process `pid` and of each of its threads, or `None` when the
/// process is gone or /proc is not readable.
pub fn process_cpu(pid: u32) -> Option<ProcessCpu> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, utime, stime) = parse_stat(&stat)?;
    let mut threads = Vec::new();
    if let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) {
        for entry in dir.flatten() {
            let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let Ok(line) = fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            if let Some((name, u, s)) = parse_stat(&line) {
                threads.push(ThreadCpu {
                    tid,
                    name,
                    user_us: ticks_to_us(u),
                    sys_us: ticks_to_us(s),
                });
            }
        }
    }
    threads.sort_by_key(|t| t.tid);
    Some(ProcessCpu {
        total: CpuTime {
            user_us: ticks_to_us(utime),
            sys_us: ticks_to_us(stime),
        },
        threads,
    })
}

/// The CPU a process used between two snapshots; threads that appeared meanwhile count from
/// zero, threads that exited meanwhile are absent.
pub fn process_cpu_delta(before: &ProcessCpu, after: &ProcessCpu) -> ProcessCpu {
    let threads = after
        .threads
        .iter()
        .map(|t| {
            let base = before.threads.iter().find(|b| b.tid == t.tid);
            ThreadCpu {
                tid: t.tid,
                name: t.name.clone(),
                user_us: t.user_us.saturating_sub(base.map_or(0, |b| b.user_us)),
                sys_us: t.sys_us.saturating_sub(base.map_or(0, |b| b.sys_us)),
            }
        })
        .collect();
    ProcessCpu {
        total: after.total.since(before.total),
        threads,
    }
}

/// CPU busy fraction of one loader thread: process CPU / wall / threads.
pub fn busy_per_thread(cpu: CpuTime, wall: Duration, threads: usize) -> f64 {
    let wall_us = wall.as_micros() as f64;
    if wall_us <= 0.0 || threads == 0 {
        return 0.0;
    }
    cpu.total_us() as f64 / wall_us / threads as f64
}

/// Raises the soft open-file limit to the hard one; returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if let Some(hard) = limit.maximum {
        let raised = rustix::process::Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return hard;
        }
    }
    limit.current.unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line_with_awkward_name() {
        let line = "1234 (wschat (loop) 0) S 1 1234 1234 0 -1 4194560 100 0 0 0 \
                    250 75 0 0 20 0 3 0 100 1000 10 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(("wschat (loop) 0".to_string(), 250, 75))
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn own_process_is_readable_and_cpu_grows() {
        let me = std::process::id();
        let snap = process_cpu(me).unwrap();
        assert!(!snap.threads.is_empty());
        let a = self_cpu();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        assert!(self_cpu().total_us() >= a.total_us());
    }

    #[test]
    fn delta_counts_new_threads_from_zero() {
        let t = |tid, u| ThreadCpu {
            tid,
            name: "t".into(),
            user_us: u,
            sys_us: 0,
        };
        let before = ProcessCpu {
            total: CpuTime {
                user_us: 10,
                sys_us: 5,
            },
            threads: vec![t(1, 10)],
        };
        let after = ProcessCpu {
            total: CpuTime {
                user_us: 30,
                sys_us: 6,
            },
            threads: vec![t(1, 25), t(2, 5)],
        };
        let d = process_cpu_delta(&before, &after);
        assert_eq!(
            d.total,
            CpuTime {
                user_us: 20,
                sys_us: 1
            }
        );
        assert_eq!(d.threads[0].user_us, 15);
        assert_eq!(d.threads[1].user_us, 5);
    }

    #[test]
    fn busy_fraction() {
        let cpu = CpuTime {
            user_us: 1_500_000,
            sys_us: 300_000,
        };
        let f = busy_per_thread(cpu, Duration::from_secs(1), 2);
        assert!((f - 0.9).abs() < 1e-9);
    }
}
