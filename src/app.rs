//! What a node runs: an [`Application`] that can also show its slices' states as JSON, and the
//! ready-made applications the CLI selects by name, with the description `blockend apps` prints
//! ([`ReadyApp::info`], [`apps_help`]).

use std::fmt::Write as _;

use blockend_kernel::{Application, Kernel, Registry, Slice};
use blockend_reducers::{Chat, Clock, Counter, Kv};
use serde::Serialize;
use serde_json::json;

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

/// What a ready-made app is for and what its slices take, as `blockend apps` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AppInfo {
    /// The app's name, as `blockend init --app` takes it.
    pub app: &'static str,
    /// One sentence on what the app keeps.
    pub about: &'static str,
    /// Its slices, in registration order.
    pub slices: Vec<SliceInfo>,
}

/// One slice of a ready-made app: the bodies it takes and the state it keeps.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SliceInfo {
    /// The slice's name, as `blockend state` takes it.
    pub slice: String,
    /// The bodies it accepts, as [`Slice::expects`] describes them.
    pub accepts: String,
    /// A body it accepts on a fresh store.
    pub example: serde_json::Value,
    /// One line on what `blockend state` shows for it.
    pub state: &'static str,
}

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

    /// What the app is for, the bodies its slice accepts with an example, and what its state
    /// shows: the description `blockend apps` prints.
    pub fn info(self) -> AppInfo {
        let (about, slice, example, state) = match self {
            Self::Clock => (
                "A shared clock: the latest tick anyone wrote, which only moves forward.",
                describe(&Clock),
                // Any time in the past is accepted; this one is 2023-11-14.
                json!({"tick": 1_700_000_000_000u64}),
                "the latest tick accepted, a number (0 before any tick)",
            ),
            Self::Counter => (
                "One growing counter per author, and the total of their latest values.",
                describe(&Counter),
                json!({"value": 1}),
                r#"{"total": <sum of the latest values>, "by_author": {"<author hex>": <latest value>}}"#,
            ),
            Self::Chat => (
                "Messages in named rooms, each gone once its time-to-live has passed.",
                describe(&Chat),
                json!({"room": "lobby", "text": "hello", "ttl_ms": 3_600_000}),
                r#"{"rooms": {"<room>": [{"time", "author", "seq", "text", "expires_at"}, ...]}}, live messages oldest first"#,
            ),
            Self::Kv => (
                "A shared map from keys to JSON values; the latest write to a key wins.",
                describe(&Kv),
                json!({"set": {"key": "color", "value": "blue"}}),
                r#"{"<key>": <value>} for every live key; deleted keys are absent"#,
            ),
        };
        let (slice, accepts) = slice;
        AppInfo {
            app: self.as_str(),
            about,
            slices: vec![SliceInfo {
                slice,
                accepts,
                example,
                state,
            }],
        }
    }
}

/// A slice's name and the bodies it accepts.
fn describe<S: Slice>(slice: &S) -> (String, String) {
    let accepts = slice
        .expects()
        .expect("every ready-made slice describes its bodies");
    (slice.name().to_owned(), accepts)
}

/// The ready-made apps in plain text, for `--help` and the README: each app, what it is for, the
/// bodies its slices accept, an example `blockend append` line and what `blockend state` shows.
pub fn apps_help() -> String {
    let mut text = String::from("Ready-made apps (choose one with `blockend init --app <app>`):\n");
    for app in ReadyApp::ALL {
        let info = app.info();
        // Writing to a String cannot fail.
        let _ = write!(text, "\n  {}: {}\n", info.app, info.about);
        for slice in &info.slices {
            let _ = write!(
                text,
                "    accepts  {}\n    example  blockend append --store DIR '{}'\n    state    {}\n",
                slice.accepts, slice.example, slice.state
            );
        }
    }
    text
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
            Self::Kv => kv_json(kernel),
        }
    }
}

/// The kv state as users read it: each live key mapped to its value as JSON (not as the JSON
/// text the state stores), deleted keys left out. The state itself keeps tombstones and write
/// times, which decide later writes and enter the digest, but mean nothing to a reader.
fn kv_json(kernel: &Kernel) -> Result<serde_json::Value, StateError> {
    let map = kernel
        .state::<Kv>()
        .ok_or_else(|| StateError::UnknownSlice {
            slice: Kv.name().to_owned(),
        })?;
    let mut live = serde_json::Map::new();
    for (key, entry) in &map.entries {
        let Some(text) = &entry.value else {
            continue;
        };
        let value = serde_json::from_str(text).map_err(|source| StateError::Render {
            slice: Kv.name().to_owned(),
            source,
        })?;
        live.insert(key.clone(), value);
    }
    Ok(serde_json::Value::Object(live))
}

#[cfg(test)]
mod tests {
    use super::*;
    use blockend_kernel::{Context, Error, ManualClock, Verdict};

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

    #[test]
    fn every_ready_apps_example_is_accepted_by_a_fresh_store() {
        for app in ReadyApp::ALL {
            let info = app.info();
            assert_eq!(info.app, app.as_str());
            assert_eq!(info.slices.len(), 1, "{info:?}");
            let slice = &info.slices[0];
            assert_eq!(slice.slice, app.default_slice());
            let mut kernel = Kernel::builder(&app).open().unwrap();
            let body = serde_json::to_vec(&slice.example).unwrap();
            let block = kernel.create_block(body);
            assert!(block.is_ok(), "{app:?}: {block:?}");
            let state = app.state_json(&kernel, &slice.slice).unwrap();
            assert_ne!(
                state,
                app.state_json(&Kernel::builder(&app).open().unwrap(), &slice.slice)
                    .unwrap(),
                "{app:?}: the example changed nothing"
            );
        }
    }

    #[test]
    fn an_empty_object_is_ignored_with_the_apps_shape_in_the_message() {
        for app in ReadyApp::ALL {
            let accepts = app.info().slices.remove(0).accepts;
            let mut kernel = Kernel::builder(&app).open().unwrap();
            let error = kernel.create_block(b"{}".to_vec()).unwrap_err();
            assert!(
                matches!(&error, Error::Ignored { expected } if expected.len() == 1),
                "{app:?}: {error:?}"
            );
            let text = error.to_string();
            assert!(
                text.contains(&format!("{}: {accepts}", app.as_str())),
                "{app:?}: {text}"
            );
        }
    }

    #[test]
    fn apps_help_names_every_app_its_shape_and_an_append_line_with_its_example() {
        let help = apps_help();
        for app in ReadyApp::ALL {
            let slice = app.info().slices.remove(0);
            assert!(help.contains(&format!("  {}: ", app.as_str())), "{help}");
            assert!(help.contains(&slice.accepts), "{help}");
            let line = format!("blockend append --store DIR '{}'", slice.example);
            assert!(help.contains(&line), "{help}");
        }
    }

    #[test]
    fn kv_state_shows_live_keys_with_their_json_values_and_no_deleted_keys() {
        let clock = ManualClock::new(1_000);
        let app = ReadyApp::Kv;
        let mut kernel = Kernel::builder(&app)
            .with_clock(clock.clone())
            .open()
            .unwrap();
        for body in [
            r#"{"set": {"key": "n", "value": 1}}"#,
            r#"{"set": {"key": "s", "value": "blue"}}"#,
            r#"{"set": {"key": "o", "value": {"a": [1, null]}}}"#,
            r#"{"set": {"key": "gone", "value": true}}"#,
            r#"{"delete": "gone"}"#,
        ] {
            // A later time, so each write wins over the one before it.
            clock.advance(1);
            kernel.create_block(body.as_bytes().to_vec()).unwrap();
        }
        // The state itself still holds the tombstone; only the rendering leaves it out.
        assert!(kernel.state::<Kv>().unwrap().entries.contains_key("gone"));
        assert_eq!(
            app.state_json(&kernel, "kv").unwrap(),
            json!({"n": 1, "s": "blue", "o": {"a": [1, null]}})
        );
    }

    #[test]
    fn a_clock_tick_from_the_future_is_refused_in_a_sentence() {
        let app = ReadyApp::Clock;
        let mut kernel = Kernel::builder(&app)
            .with_clock(ManualClock::new(5_000))
            .open()
            .unwrap();
        let error = kernel
            .create_block(br#"{"tick": 9000}"#.to_vec())
            .unwrap_err();
        let Error::Rejected { slice, reason } = &error else {
            panic!("not a rejection: {error:?}");
        };
        assert_eq!(slice, "clock");
        assert!(
            reason.contains("tick 9000 is later than the block's own time 5000"),
            "{reason}"
        );
        assert!(
            !error.to_string().contains("TimestampFromFuture"),
            "{error}"
        );
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
