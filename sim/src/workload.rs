//! What honest peers write: the application their kernels run and the bodies of their blocks.
//!
//! The ready-made workloads use `blockend-reducers` slices; a user plugs their own
//! application in by implementing [`Workload`] and handing it to
//! [`Simulation::with_workload`](crate::Simulation::with_workload).

use blockend_kernel::{Application, Registry};
use blockend_reducers::{Chat, Counter};

use crate::config::{Workload as Spec, WorkloadKind};

/// An application under test and the blocks its users write.
///
/// ```
/// use blockend_kernel::{Context, Registry, Slice, Verdict};
/// use blockend_sim::Workload;
///
/// struct Likes;
/// impl Slice for Likes {
///     type State = u64;
///     fn name(&self) -> &str { "likes" }
///     fn initial(&self) -> u64 { 0 }
///     fn filter(&self, _: &Context<'_>, _: &u64) -> Verdict { Verdict::Accept }
///     fn reduce(&self, _: &Context<'_>, n: &mut u64) { *n += 1 }
///     fn commutative(&self) -> bool { true }
/// }
///
/// struct LikesWorkload;
/// impl Workload for LikesWorkload {
///     fn register(&self, slices: &mut Registry) { slices.add(Likes); }
///     fn body(&self, _peer: usize, n: u64) -> Vec<u8> { format!("like {n}").into_bytes() }
/// }
/// ```
pub trait Workload: Send + Sync {
    /// Registers the application's slices (as [`Application::register`]).
    fn register(&self, slices: &mut Registry);
    /// The body of the `n`-th block (from 0) written by `peer`. It must be accepted by the
    /// application in that peer's state: the simulator counts every honest block as one that
    /// must reach every honest peer.
    fn body(&self, peer: usize, n: u64) -> Vec<u8>;
}

/// The counter workload: `{"value": n+1}`, strictly growing per author.
#[derive(Clone, Copy, Debug, Default)]
pub struct CounterWorkload;

impl Workload for CounterWorkload {
    fn register(&self, slices: &mut Registry) {
        slices.add(Counter);
    }
    fn body(&self, _peer: usize, n: u64) -> Vec<u8> {
        format!(r#"{{"value":{}}}"#, n + 1).into_bytes()
    }
}

/// The chat workload: one room, messages that expire after `ttl_ms`.
#[derive(Clone, Copy, Debug)]
pub struct ChatWorkload {
    /// How long a message lives.
    pub ttl_ms: u64,
}

impl Workload for ChatWorkload {
    fn register(&self, slices: &mut Registry) {
        slices.add(Chat);
    }
    fn body(&self, peer: usize, n: u64) -> Vec<u8> {
        format!(
            r#"{{"room":"lobby","text":"message {n} from peer {peer}","ttl_ms":{}}}"#,
            self.ttl_ms
        )
        .into_bytes()
    }
}

/// The ready-made workload a scenario names.
pub fn ready_made(spec: &Spec) -> Box<dyn Workload> {
    match spec.kind {
        WorkloadKind::Counter => Box::new(CounterWorkload),
        WorkloadKind::Chat => Box::new(ChatWorkload {
            ttl_ms: spec.ttl_ms,
        }),
    }
}

/// Lends a [`Workload`] to `Kernel::builder` as an [`Application`].
pub(crate) struct AppOf<'a>(pub &'a dyn Workload);

impl Application for AppOf<'_> {
    fn register(&self, slices: &mut Registry) {
        self.0.register(slices);
    }
}
