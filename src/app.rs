//! What a node runs: an [`Application`] that can also show its slices' states as JSON, and the
//! ready-made applications the CLI selects by name.

use blockend_kernel::{Application, Kernel, Registry, Slice};
use blockend_reducers::{Chat, Clock, Counter, Kv};
use serde::Serialize;

/// An application a node can run: it registers slices, has a name (a store remembers the app
/// it was created for) and renders its slices' states as JSON for `state` and the local API.
pub trait NodeApp: Application + Send + Sync + 'static {
    /// The app's name, as a store remembers it.
    fn name(&self) -> &str;

    /// The slice `state` shows when none is named.
    fn default_slice(&self) -> &str;

    /// The named slice's state as JSON, or `None` if the app has no such slice.
    fn state_json(&self, kernel: &Kernel, slice: &str) -> Option<serde_json::Value>;
}

/// A registered slice's state as JSON, for [`NodeApp::state_json`] implementations.
pub fn state_json<S: Slice>(kernel: &Kernel) -> Option<serde_json::Value>
where
    S::State: Serialize,
{
    kernel
        .state::<S>()
        .and_then(|state| serde_json::to_value(state).ok())
}

/// The ready-made applications: one slice from `blockend-reducers` each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadyApp {
    /// Latest tick: bodies `{"tick": <ms>}`.
    Clock,
    /// One counter per author: bodies `{"value": <n>}`.
    Counter,
    /// Rooms of expiring messages: bodies `{"room", "text", "ttl_ms"}`.
    Chat,
    /// Last-writer-wins map: bodies `{"set": {"key", "value"}}` or `{"delete": "<key>"}`.
    Kv,
}

/// An app name that is not one of the ready-made apps.
#[derive(Debug, thiserror::Error)]
#[error("unknown app {0:?}: expected one of clock, counter, chat, kv")]
pub struct UnknownApp(pub String);

impl ReadyApp {
    /// Every ready-made app.
    pub const ALL: [ReadyApp; 4] = [Self::Clock, Self::Counter, Self::Chat, Self::Kv];

    /// The app with this name.
    ///
    /// # Errors
    /// [`UnknownApp`] for any other name.
    pub fn from_name(name: &str) -> Result<Self, UnknownApp> {
        Self::ALL
            .into_iter()
            .find(|app| app.as_str() == name)
            .ok_or_else(|| UnknownApp(name.to_owned()))
    }

    /// The app's name (also its slice's name).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clock => "clock",
            Self::Counter => "counter",
            Self::Chat => "chat",
            Self::Kv => "kv",
        }
    }
}

impl std::str::FromStr for ReadyApp {
    type Err = UnknownApp;
    fn from_str(s: &str) -> Result<Self, UnknownApp> {
        Self::from_name(s)
    }
}

impl Application for ReadyApp {
    fn register(&self, slices: &mut Registry) {
        match self {
            Self::Clock => slices.add(Clock),
            Self::Counter => slices.add(Counter),
            Self::Chat => slices.add(Chat),
            Self::Kv => slices.add(Kv),
        };
    }
}

impl NodeApp for ReadyApp {
    fn name(&self) -> &str {
        self.as_str()
    }

    fn default_slice(&self) -> &str {
        self.as_str()
    }

    fn state_json(&self, kernel: &Kernel, slice: &str) -> Option<serde_json::Value> {
        if slice != self.as_str() {
            return None;
        }
        match self {
            Self::Clock => state_json::<Clock>(kernel),
            Self::Counter => state_json::<Counter>(kernel),
            Self::Chat => state_json::<Chat>(kernel),
            Self::Kv => state_json::<Kv>(kernel),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ready_app_round_trips_its_name_and_renders_its_state() {
        for app in ReadyApp::ALL {
            assert_eq!(ReadyApp::from_name(app.as_str()).unwrap(), app);
            let kernel = Kernel::builder(&app).open().unwrap();
            assert!(app.state_json(&kernel, app.as_str()).is_some());
            assert!(app.state_json(&kernel, "nope").is_none());
        }
        assert!(ReadyApp::from_name("ledger").is_err());
    }
}
