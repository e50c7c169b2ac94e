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

    /// The named slice's state as JSON.
    ///
    /// # Errors
    /// [`StateError::UnknownSlice`] if the app has no such slice, [`StateError::Render`] if its
    /// state does not serialize to JSON.
    fn state_json(&self, kernel: &Kernel, slice: &str) -> Result<serde_json::Value, StateError>;
}

/// Why a slice's state cannot be shown.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The app has no slice of that name (or the kernel did not register it). Nothing was read;
    /// the caller may ask for another name, such as [`NodeApp::default_slice`].
    #[error("no slice {slice:?} in this app")]
    UnknownSlice {
        /// The name asked for.
        slice: String,
    },
    /// The slice exists but its state does not serialize to JSON (a map with keys that are not
    /// strings, an integer beyond 64 bits). Asking again gives the same error until the state
    /// changes: the slice's `State` needs a JSON shape for such values.
    #[error("cannot render the state of slice {slice:?} as JSON: {source}")]
    Render {
        /// The slice.
        slice: String,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
}

/// A registered slice's state as JSON, for [`NodeApp::state_json`] implementations.
///
/// # Errors
/// [`StateError::UnknownSlice`] if the kernel did not register `slice`, [`StateError::Render`]
/// if its state does not serialize to JSON.
pub fn state_json<S: Slice>(kernel: &Kernel, slice: &S) -> Result<serde_json::Value, StateError>
where
    S::State: Serialize,
{
    let name = || slice.name().to_owned();
    let state = kernel
        .state::<S>()
        .ok_or_else(|| StateError::UnknownSlice { slice: name() })?;
    serde_json::to_value(state).map_err(|source| StateError::Render {
        slice: name(),
        source,
    })
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

    fn state_json(&self, kernel: &Kernel, slice: &str) -> Result<serde_json::Value, StateError> {
        if slice != self.as_str() {
            return Err(StateError::UnknownSlice {
                slice: slice.to_owned(),
            });
        }
        match self {
            Self::Clock => state_json(kernel, &Clock),
            Self::Counter => state_json(kernel, &Counter),
            Self::Chat => state_json(kernel, &Chat),
            Self::Kv => state_json(kernel, &Kv),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blockend_kernel::{Context, Verdict};

    #[test]
    fn every_ready_app_round_trips_its_name_and_renders_its_state() {
        for app in ReadyApp::ALL {
            assert_eq!(ReadyApp::from_name(app.as_str()).unwrap(), app);
            let kernel = Kernel::builder(&app).open().unwrap();
            assert!(app.state_json(&kernel, app.as_str()).is_ok());
            assert!(matches!(
                app.state_json(&kernel, "nope"),
                Err(StateError::UnknownSlice { slice }) if slice == "nope"
            ));
        }
        assert!(ReadyApp::from_name("ledger").is_err());
    }

    /// A state JSON cannot hold: a map keyed by pairs.
    struct Pairs;
    impl Slice for Pairs {
        type State = std::collections::BTreeMap<(u8, u8), u8>;
        fn name(&self) -> &str {
            "pairs"
        }
        fn initial(&self) -> Self::State {
            [((1, 2), 3)].into()
        }
        fn filter(&self, _: &Context<'_>, _: &Self::State) -> Verdict {
            Verdict::Ignore
        }
        fn reduce(&self, _: &Context<'_>, _: &mut Self::State) {}
    }

    struct PairsApp;
    impl Application for PairsApp {
        fn register(&self, slices: &mut Registry) {
            slices.add(Pairs);
        }
    }

    #[test]
    fn a_state_that_does_not_render_reports_its_slice_and_serde_jsons_cause() {
        let kernel = Kernel::builder(&PairsApp).open().unwrap();
        let error = state_json(&kernel, &Pairs).unwrap_err();
        assert!(
            matches!(&error, StateError::Render { slice, .. } if slice == "pairs"),
            "{error:?}"
        );
        let text = error.to_string();
        assert!(
            text.contains("\"pairs\"") && text.contains("key must be a string"),
            "{text}"
        );
        // A slice the kernel did not register is unknown, not unrenderable.
        let empty = Kernel::builder(&ReadyApp::Clock).open().unwrap();
        assert!(matches!(
            state_json(&empty, &Pairs),
            Err(StateError::UnknownSlice { slice }) if slice == "pairs"
        ));
    }
}
