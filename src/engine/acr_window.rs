//! The ACR figures an evaluation reads, looked up once.
//!
//! Net customer adds and usage growth read a handful of months (M-13, M-12, M-1, M) for
//! every customer, in every designation. Looking each up in the customer's month list per
//! designation costs more than the rest of an evaluation, so the months the rule set names
//! are gathered per customer in one pass first.

use super::state::PartnerState;
use crate::calendar::Month;
use crate::rules::RuleSet;

pub(crate) struct AcrWindow<'a> {
    /// The months some rule reads, each a slot.
    months: Vec<Month>,
    /// Customers with eligible ACR, in id order.
    customers: Vec<&'a String>,
    /// Row-major: customer `c`'s ACR per area in slot `s` is `cells[c * months.len() + s]`.
    cells: Vec<[i128; 3]>,
}

impl<'a> AcrWindow<'a> {
    pub fn build(state: &'a PartnerState, m: Month, rules: &RuleSet) -> AcrWindow<'a> {
        // Largest "back" first, so the slots are in month order.
        let months: Vec<Month> = rules.acr_months_back().iter().rev().map(|b| m.back(*b)).collect();
        let mut customers = Vec::with_capacity(state.customers().len());
        let mut cells = Vec::with_capacity(state.customers().len() * months.len());
        for (id, c) in state.customers().iter().filter(|(_, c)| !c.acr.is_empty()) {
            customers.push(id);
            cells.extend(
                months
                    .iter()
                    .map(|month| c.acr.binary_search_by_key(month, |cell| cell.0).map_or([0; 3], |i| c.acr[i].1)),
            );
        }
        AcrWindow { months, customers, cells }
    }

    /// The slot of a month some rule of the set names.
    pub fn slot(&self, month: Month) -> usize {
        self.months.binary_search(&month).expect("every month a rule reads has a slot")
    }

    /// Customers with any eligible ACR, each with its per-slot, per-area ACR.
    pub fn customers(&self) -> impl Iterator<Item = (&'a String, &[[i128; 3]])> {
        self.customers.iter().copied().zip(self.cells.chunks_exact(self.months.len().max(1)))
    }
}
