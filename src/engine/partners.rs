//! Many partners' states side by side: what the file scorer (and a test) keeps in memory.

use super::{Applied, PartnerScore, PartnerState, StateError, evaluate};
use crate::events::Event;
use crate::rules::RuleBook;
use chrono::NaiveDate;
use std::collections::BTreeMap;

/// Partner states keyed by partner id; iteration is in byte order of the id (spec §7).
#[derive(Default)]
pub struct Partners {
    states: BTreeMap<String, PartnerState>,
}

impl Partners {
    /// Merges an event into its partner's state. A rejected event creates no partner.
    pub fn apply(&mut self, event: &Event) -> Result<Applied, StateError> {
        if let Some(state) = self.states.get_mut(event.partner_id.as_str()) {
            return state.apply(event);
        }
        let mut state = PartnerState::default();
        let applied = state.apply(event)?;
        self.states.insert(event.partner_id.clone(), state);
        Ok(applied)
    }

    pub fn get(&self, partner_id: &str) -> Option<&PartnerState> {
        self.states.get(partner_id)
    }

    /// Every partner's report on `as_of`, sorted by partner id.
    pub fn evaluate<'a>(&'a self, as_of: NaiveDate, rules: &'a RuleBook) -> impl Iterator<Item = PartnerScore> + 'a {
        self.states.iter().map(move |(id, state)| evaluate(id, state, as_of, rules))
    }
}
