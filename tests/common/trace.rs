//! Capturing what `tracing` reports, per test: one subscriber per test binary, installed
//! once as the global default, hands what each thread reports to the capture that
//! thread set up with [`capture`] (per thread, as a scoped default would).
//!
//! Why not `tracing::subscriber::set_default` per test: tracing caches each callsite's
//! interest process-wide (tracing-core `callsite.rs`), computed when the callsite is
//! first hit. While only one dispatcher is registered, that computation asks the
//! *current thread's* default (`Rebuilder::JustOne` → `get_default`), so a callsite
//! first hit by a test thread without a subscriber is cached as "never" for every
//! thread until the next dispatcher registration: another test's scoped subscriber then
//! never sees it (tower-http's `request` span, about 1 run in 30, when the timeout test
//! hit it first). With several scoped subscribers, a callsite registered while another
//! test registers its dispatcher can keep an "always" computed from one subscriber's
//! filter for all of them. Here the one dispatcher answers `Interest::sometimes()` for
//! every callsite, so the cache holds no decision and `enabled` asks the current thread
//! each time.
//!
//! A callsite first hit before the global subscriber exists is cached as "never" and
//! fixed by the rebuild the installation does; one whose registration straddles the
//! installation could keep "never". So a test that hits callsites it asserts on calls
//! [`install`] (or [`capture`]) before anything else: the `Once` orders every such hit
//! after the installation.

use std::cell::RefCell;
use std::sync::{Arc, Once};

use tracing::Metadata;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::Registry;

/// Where one test's spans and events go.
pub type Sink = Arc<dyn Layer<Registry> + Send + Sync>;

thread_local! {
    static CURRENT: RefCell<Option<(Sink, LevelFilter)>> = const { RefCell::new(None) };
}

/// Installs the global subscriber (once per process).
pub fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        tracing::subscriber::set_global_default(Registry::default().with(Router))
            .expect("no other global tracing subscriber in this test binary");
        // Callsites registered between the registration's rebuild and the global
        // default becoming visible asked no subscriber: ask again.
        tracing::callsite::rebuild_interest_cache();
    });
}

/// Sends what this thread reports at `level` or more severe (spans created here, their
/// later records wherever they happen, events here) to `sink` until the guard drops.
pub fn capture(sink: impl Layer<Registry> + Send + Sync, level: LevelFilter) -> CaptureGuard {
    install();
    let sink: Sink = Arc::new(sink);
    let previous = CURRENT.with(|c| c.borrow_mut().replace((sink, level)));
    CaptureGuard { previous }
}

/// Ends this thread's capture (restoring the one before it) when dropped.
#[must_use = "the capture ends when the guard drops"]
pub struct CaptureGuard {
    previous: Option<(Sink, LevelFilter)>,
}

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        let _ = CURRENT.try_with(|c| *c.borrow_mut() = previous);
    }
}

fn current() -> Option<(Sink, LevelFilter)> {
    CURRENT.try_with(|c| c.borrow().clone()).ok().flatten()
}

/// The sink a span was created for: its records and its close go there, from any thread
/// (a span keeps the dispatcher it was made with).
struct Owner(Sink);

fn owner(id: &Id, ctx: &Context<'_, Registry>) -> Option<Sink> {
    let span = ctx.span(id)?;
    let extensions = span.extensions();
    extensions.get::<Owner>().map(|o| Arc::clone(&o.0))
}

struct Router;

impl Layer<Registry> for Router {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }

    fn enabled(&self, meta: &Metadata<'_>, _: Context<'_, Registry>) -> bool {
        current().is_some_and(|(_, level)| *meta.level() <= level)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::TRACE)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, Registry>) {
        let Some((sink, _)) = current() else {
            return;
        };
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Owner(Arc::clone(&sink)));
        }
        sink.on_new_span(attrs, id, ctx);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, Registry>) {
        if let Some(sink) = owner(id, &ctx) {
            sink.on_record(id, values, ctx);
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, Registry>) {
        if let Some((sink, _)) = current() {
            sink.on_event(event, ctx);
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, Registry>) {
        if let Some(sink) = owner(id, &ctx) {
            sink.on_enter(id, ctx);
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, Registry>) {
        if let Some(sink) = owner(id, &ctx) {
            sink.on_exit(id, ctx);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, Registry>) {
        if let Some(sink) = owner(&id, &ctx) {
            sink.on_close(id, ctx);
        }
    }
}
