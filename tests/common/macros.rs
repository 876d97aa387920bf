//! The test matrix macro (in the style of ripgrep's `tests/macros.rs`).
//!
//! ```ignore
//! wstest!(chat_join_notice, |s| {
//!     let server = s.server();
//!     // ...
//! });
//! ```
//!
//! expands into a module `chat_join_notice` holding the body once and one
//! `#[test]` per (pattern, io) combination, named after the combination:
//! `chat_join_notice::single_thread_epoll`, ... Filter with
//! `cargo test chat_join_notice` or `cargo test single_thread_epoll`.

/// Defines one `#[test]` per (pattern, io) combination running `$body`.
///
/// THE list of combinations under test: adding a pattern or an I/O backend is
/// one line here (e.g. `setup_test!($body, reuseport_uring, "reuseport", "uring", [...]);`).
/// Multi-thread patterns run with two loops (and two workers), so that rooms, senders and
/// shutdown cross threads.
macro_rules! for_each_setup {
    ($body:ident) => {
        setup_test!($body, single_thread_epoll, "single-thread", "epoll", []);
        setup_test!(
            $body,
            acceptor_readers_epoll,
            "acceptor-readers",
            "epoll",
            ["--threads", "2"]
        );
        setup_test!(
            $body,
            work_queue_epoll,
            "work-queue",
            "epoll",
            ["--workers", "2"]
        );
        setup_test!(
            $body,
            multi_accept_epoll,
            "multi-accept",
            "epoll",
            ["--threads", "2"]
        );
        setup_test!(
            $body,
            reuseport_epoll,
            "reuseport",
            "epoll",
            ["--threads", "2"]
        );
        setup_test!($body, single_thread_uring, "single-thread", "uring", []);
        setup_test!(
            $body,
            acceptor_readers_uring,
            "acceptor-readers",
            "uring",
            ["--threads", "2"]
        );
        setup_test!(
            $body,
            work_queue_uring,
            "work-queue",
            "uring",
            ["--workers", "2"]
        );
        setup_test!(
            $body,
            multi_accept_uring,
            "multi-accept",
            "uring",
            ["--threads", "2"]
        );
        setup_test!(
            $body,
            reuseport_uring,
            "reuseport",
            "uring",
            ["--threads", "2"]
        );
        // Every io_uring fallback (plain accept, recv into per-op buffers, no taskrun flags).
        setup_test!(
            $body,
            single_thread_uring_nofeatures,
            "single-thread",
            "uring",
            ["--uring-features", "none"]
        );
    };
}

macro_rules! setup_test {
    ($body:ident, $combo:ident, $pattern:literal, $io:literal, [$($flag:literal),*]) => {
        #[test]
        fn $combo() {
            $body(&$crate::common::Setup::new($pattern, $io, &[$($flag),*]));
        }
    };
}

/// `wstest!(name, |setup| { body })`: a behaviour test run for every
/// combination in `for_each_setup!`.
macro_rules! wstest {
    ($name:ident, |$setup:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[allow(unused_variables)]
            fn body($setup: &$crate::common::Setup) $body

            for_each_setup!(body);
        }
    };
}
