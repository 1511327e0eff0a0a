//! Sequence rules: events that match a rule's steps in turn, joined by its
//! `by` fields, the first and the last at most its `maxspan` apart.
//!
//! Contract:
//! - [`Sequences::build`] makes one tracker per sequence rule, with each
//!   step's condition folded for each event category at load
//!   ([`crate::rule::reach::with_constants`]): a step no exec can match
//!   costs an exec nothing, and [`Sequences::wants`] says whether any step
//!   can match a category at all.
//! - [`Sequences::hits`] says which steps an event matches (its condition
//!   holds and no exception of the rule, nor a global one, does) and with
//!   which join key; the caller adds what the alert needs and offers them.
//! - [`Sequences::offer`]: a hit on the first step starts a partial
//!   sequence for its key (replacing an older one: EQL keeps the latest per
//!   key and step); a hit on a later step takes the partial of the step
//!   before with its key, or, when `by` names `process.pid`, with the key
//!   of one of its process's ancestors (an injector's helper child), if
//!   the first step is at most `maxspan` earlier; the last step completes
//!   it. Steps are tried from the last down, so one event never fills two.
//! - At most [`MAX_PARTIALS`] partial sequences are held per rule; past
//!   that the oldest goes (counted), and so does every one whose `maxspan`
//!   has passed.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde_json::{Value, json};

use crate::alert::{Alert, StepFacts};
use crate::rule::eval::{Category, Event, Expr, Scalar};
use crate::rule::field::Field;
use crate::rule::reach::{never_fires, with_constants};
use crate::rule::{Rule, RuleSet};

/// Partial sequences held per rule, at most.
pub const MAX_PARTIALS: usize = 4096;

/// Ancestors of a later step's process tried for a `process.pid` join.
pub const MAX_ANCESTORS: usize = 16;

/// The categories a step is folded for, in this order.
const CATEGORIES: [Category; 3] = [Category::Process, Category::File, Category::Api];

fn slot(category: Category) -> Option<usize> {
    CATEGORIES.iter().position(|c| *c == category)
}

/// One value of a join key.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
enum KeyPart {
    Long(i64),
    Bytes(Box<[u8]>),
    Boolean(bool),
}

type Key = Box<[KeyPart]>;

/// A step an event matched, with the keys it may join on: its own first,
/// then (for a `process.pid` join of a later step) its ancestors'.
pub struct Hit {
    tracker: usize,
    step: usize,
    keys: Vec<Key>,
    pid_at: Option<usize>,
}

impl Hit {
    /// The index of the hit's rule.
    pub fn rule(&self, sequences: &Sequences) -> usize {
        sequences.trackers[self.tracker].rule
    }

    /// Whether the hit is on its rule's last step: it may complete a
    /// sequence, and its alert is the sequence's.
    pub fn is_last(&self, sequences: &Sequences) -> bool {
        self.step + 1 == sequences.trackers[self.tracker].steps.len()
    }

    /// Whether it joins through `process.pid` on a later step, so the
    /// caller should give the process's ancestors ([`Hit::add_ancestors`]).
    pub fn wants_ancestors(&self) -> bool {
        self.step > 0 && self.pid_at.is_some()
    }

    /// Keys of the same values with `process.pid` an ancestor's, nearest
    /// first.
    pub fn add_ancestors(&mut self, ancestors: &[u32]) {
        let (Some(at), Some(own)) = (self.pid_at, self.keys.first().cloned()) else {
            return;
        };
        for &pid in ancestors.iter().take(MAX_ANCESTORS) {
            let mut key = own.clone();
            key[at] = KeyPart::Long(pid.into());
            self.keys.push(key);
        }
    }
}

/// What a step brought to a sequence.
#[derive(Debug)]
struct Partial {
    first_ms: u64,
    steps: Vec<Arc<StepFacts>>,
    /// Tells this partial from a later one of the same key in `order`.
    generation: u64,
}

#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct SequenceStats {
    /// Partial sequences held now.
    pub partials: usize,
    pub started: u64,
    pub completed: u64,
    /// Dropped when their maxspan passed.
    pub expired: u64,
    /// Dropped to stay within [`MAX_PARTIALS`].
    pub evicted: u64,
}

struct Tracker {
    rule: usize,
    by: Vec<Field>,
    pid_at: Option<usize>,
    maxspan_ms: u64,
    /// Each step's condition as each category's events see it; `None`
    /// where none of them can match.
    steps: Vec<[Option<Expr>; 3]>,
    /// By (step reached, key).
    partials: FxHashMap<(usize, Key), Partial>,
    /// Partials by age: (generation, step reached, key, first step's time).
    order: VecDeque<(u64, usize, Key, u64)>,
    next_generation: u64,
}

/// Every sequence rule's state.
#[derive(Default)]
pub struct Sequences {
    trackers: Vec<Tracker>,
    /// Whether any step can match an event of each of [`CATEGORIES`].
    wanted: [bool; 3],
    stats: SequenceStats,
}

impl Sequences {
    /// A tracker for each sequence rule of `rules`.
    pub fn build(rules: &RuleSet) -> Sequences {
        let mut sequences = Sequences::default();
        for (index, rule) in rules.rules.iter().enumerate() {
            if let Some(tracker) = Tracker::new(index, rule) {
                for step in &tracker.steps {
                    for (slot, condition) in step.iter().enumerate() {
                        sequences.wanted[slot] |= condition.is_some();
                    }
                }
                sequences.trackers.push(tracker);
            }
        }
        sequences
    }

    /// Whether an event of `category` can be a step of any sequence.
    pub fn wants(&self, category: Category) -> bool {
        slot(category).is_some_and(|s| self.wanted[s])
    }

    /// Whether the step after `hit`'s can be a call (an `api` event).
    pub fn call_may_follow(&self, hit: &Hit) -> bool {
        let api = slot(Category::Api);
        self.trackers[hit.tracker]
            .steps
            .get(hit.step + 1)
            .zip(api)
            .is_some_and(|(step, api)| step[api].is_some())
    }

    pub fn stats(&self) -> SequenceStats {
        SequenceStats {
            partials: self.trackers.iter().map(|t| t.partials.len()).sum(),
            ..self.stats
        }
    }

    /// The steps `event` (of `category`) matches, last steps first.
    pub fn hits(&self, category: Category, event: &mut dyn Event, rules: &RuleSet) -> Vec<Hit> {
        let mut hits = Vec::new();
        let Some(slot) = slot(category).filter(|s| self.wanted[*s]) else {
            return hits;
        };
        for (t, tracker) in self.trackers.iter().enumerate() {
            let Some(rule) = rules.rules.get(tracker.rule) else {
                continue;
            };
            for step in (0..tracker.steps.len()).rev() {
                let Some(condition) = &tracker.steps[step][slot] else {
                    continue;
                };
                if !condition.matches(event)
                    || rule.exceptions.iter().any(|e| e.condition.matches(event))
                    || rules
                        .global_exceptions
                        .iter()
                        .any(|e| e.condition.matches(event))
                {
                    continue;
                }
                if let Some(key) = key_of(&tracker.by, event) {
                    hits.push(Hit {
                        tracker: t,
                        step,
                        keys: vec![key],
                        pid_at: tracker.pid_at,
                    });
                }
            }
        }
        hits
    }

    /// Advances the sequences `hit` belongs to with the event `facts`
    /// describe; `last` is the event's alert for the rule, needed when the
    /// hit is on the last step. A completed sequence's alert is returned:
    /// `last` with every step in `mapwatch.sequence`.
    pub fn offer(
        &mut self,
        hit: Hit,
        facts: &Arc<StepFacts>,
        last: Option<Alert>,
    ) -> Option<Alert> {
        let tracker = self.trackers.get_mut(hit.tracker)?;
        tracker.expire(facts.time_ms, &mut self.stats);
        if hit.step == 0 {
            let key = hit.keys.into_iter().next()?;
            tracker.insert(0, key, facts.time_ms, vec![facts.clone()], &mut self.stats);
            self.stats.started += 1;
            return None;
        }
        let (key, mut partial) = hit.keys.into_iter().find_map(|key| {
            let partial = tracker.partials.remove(&(hit.step - 1, key.clone()))?;
            Some((key, partial))
        })?;
        if facts.time_ms.saturating_sub(partial.first_ms) > tracker.maxspan_ms {
            self.stats.expired += 1;
            return None;
        }
        partial.steps.push(facts.clone());
        if hit.step + 1 < tracker.steps.len() {
            tracker.insert(
                hit.step,
                key,
                partial.first_ms,
                partial.steps,
                &mut self.stats,
            );
            return None;
        }
        self.stats.completed += 1;
        Some(completed_alert(last?, &partial.steps, tracker.maxspan_ms))
    }
}

impl Tracker {
    fn new(rule_index: usize, rule: &Rule) -> Option<Tracker> {
        let sequence = rule.sequence()?;
        let steps = sequence
            .steps
            .iter()
            .map(|step| {
                CATEGORIES.map(|category| {
                    let applies = step.category == Category::Any || step.category == category;
                    (applies && never_fires(&step.condition, category).is_none())
                        .then(|| with_constants(&step.condition, category))
                })
            })
            .collect();
        Some(Tracker {
            rule: rule_index,
            pid_at: sequence.by.iter().position(|f| *f == Field::ProcessPid),
            by: sequence.by.clone(),
            maxspan_ms: sequence.maxspan.as_millis() as u64,
            steps,
            partials: FxHashMap::default(),
            order: VecDeque::new(),
            next_generation: 0,
        })
    }

    fn insert(
        &mut self,
        step: usize,
        key: Key,
        first_ms: u64,
        steps: Vec<Arc<StepFacts>>,
        stats: &mut SequenceStats,
    ) {
        let generation = self.next_generation;
        self.next_generation += 1;
        self.order
            .push_back((generation, step, key.clone(), first_ms));
        self.partials.insert(
            (step, key),
            Partial {
                first_ms,
                steps,
                generation,
            },
        );
        while self.partials.len() > MAX_PARTIALS {
            if self.drop_oldest().is_some() {
                stats.evicted += 1;
            }
        }
        // Entries of partials since replaced or advanced.
        if self.order.len() > 2 * MAX_PARTIALS {
            let partials = &self.partials;
            self.order.retain(|(generation, step, key, _)| {
                partials
                    .get(&(*step, key.clone()))
                    .is_some_and(|p| p.generation == *generation)
            });
        }
    }

    /// Drops the oldest partial still held; its first step's time.
    fn drop_oldest(&mut self) -> Option<u64> {
        while let Some((generation, step, key, first_ms)) = self.order.pop_front() {
            let entry = (step, key);
            if self
                .partials
                .get(&entry)
                .is_some_and(|p| p.generation == generation)
            {
                self.partials.remove(&entry);
                return Some(first_ms);
            }
        }
        None
    }

    /// Drops partials whose maxspan passed before `now_ms`.
    fn expire(&mut self, now_ms: u64, stats: &mut SequenceStats) {
        while let Some(&(_, _, _, first_ms)) = self.order.front() {
            if now_ms.saturating_sub(first_ms) <= self.maxspan_ms {
                break;
            }
            if self.drop_oldest().is_some() {
                stats.expired += 1;
            }
        }
    }
}

/// The join key of `event`: the first value of each `by` field; `None`
/// when one is missing (such an event joins nothing).
fn key_of(by: &[Field], event: &mut dyn Event) -> Option<Key> {
    let mut key = Vec::with_capacity(by.len());
    for field in by {
        let mut part = None;
        event.visit(*field, &mut |value| {
            part = Some(match value {
                Scalar::Long(n) => KeyPart::Long(n),
                Scalar::Keyword(bytes) => KeyPart::Bytes(bytes.into()),
                Scalar::Boolean(b) => KeyPart::Boolean(b),
            });
            ControlFlow::Break(())
        });
        key.push(part?);
    }
    Some(key.into_boxed_slice())
}

/// The last step's alert as the sequence's: every step in
/// `mapwatch.sequence`, and a message that tells them in order.
fn completed_alert(mut alert: Alert, steps: &[Arc<StepFacts>], maxspan_ms: u64) -> Alert {
    let first_ms = steps.first().map_or(0, |s| s.time_ms);
    let last_ms = steps.last().map_or(0, |s| s.time_ms);
    let listed: Vec<Value> = steps
        .iter()
        .enumerate()
        .map(|(i, step)| step.document(i + 1))
        .collect();
    // A read's time is when it was taken off the queue, a little late: a
    // span shorter than that lateness reads as 0.
    alert.document["mapwatch"]["sequence"] = json!({
        "maxspan_ms": maxspan_ms,
        "span_ms": last_ms.saturating_sub(first_ms),
        "steps": listed,
    });
    let earlier: Vec<String> = steps[..steps.len().saturating_sub(1)]
        .iter()
        .map(|s| s.deed())
        .collect();
    if let Some(message) = alert.document["message"].as_str()
        && let Some((rule, rest)) = message.split_once(": ")
    {
        let message = format!("{rule}: {}, then {rest}", earlier.join(", then "));
        alert.document["message"] = json!(message);
    }
    if let Some(reason) = alert.document["event"]["reason"].as_str() {
        let reason = format!("{}, then {reason}", earlier.join(", then "));
        alert.document["event"]["reason"] = json!(reason);
    }
    alert
        .summary
        .push_str(&format!(" sequence_steps={}", steps.len()));
    alert
}
