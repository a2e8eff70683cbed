//! The demo dataset: deterministic events for 60 partners on both paths — some qualified,
//! some one or two points short, some far off — plus a few malformed lines, scored as of
//! [`DEMO_AS_OF`]. `pcs demo-data` prints it; `pcs serve --demo` loads the copy bundled in
//! `demo/events.jsonl` (a test keeps the two identical).

/// The date the demo is meant to be scored on (`serve --demo` uses it unless `--now` is set).
pub const DEMO_AS_OF: &str = "2024-07-10";

/// The bundled copy of [`generate`]'s output.
pub const BUNDLED: &str = include_str!("../demo/events.jsonl");

const PARTNERS: usize = 60;

/// A small deterministic generator (xorshift64*), so the dataset never changes by accident.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Writer {
    lines: Vec<String>,
    partner: String,
    n: usize,
}

impl Writer {
    fn id(&mut self, kind: &str) -> String {
        self.n += 1;
        format!("{}-{kind}-{}", self.partner, self.n)
    }

    fn acr(&mut self, customer: &str, segment: &str, area: &str, month: &str, usd: u64) {
        let id = self.id("acr");
        self.lines.push(format!(
            r#"{{"type":"acr","event_id":"{id}","partner_id":"{}","customer_id":"{customer}","customer_segment":"{segment}","solution_area":"{area}","attribution":"PAL","month":"{month}","amount_micros":"{}"}}"#,
            self.partner,
            usd * 1_000_000
        ));
    }

    fn cert(&mut self, who: &str, certification: &str) {
        let id = self.id("cert");
        self.lines.push(format!(
            r#"{{"type":"certification","event_id":"{id}","partner_id":"{}","individual_id":"{who}","certification":"{certification}","earned_on":"2023-09-01"}}"#,
            self.partner
        ));
    }

    fn deployment(&mut self, area: &str, day: u64) {
        let id = self.id("dep");
        self.lines.push(format!(
            r#"{{"type":"deployment","event_id":"{id}","partner_id":"{}","deployment_id":"{id}","customer_id":"C1","solution_area":"{area}","service":"Azure Kubernetes Service","attribution":"CSP","deployed_on":"2024-05-{:02}"}}"#,
            self.partner,
            day % 28 + 1
        ));
    }
}

const AAA: &str = "AZURE_ADMINISTRATOR_ASSOCIATE";
const ASAE: &str = "AZURE_SOLUTIONS_ARCHITECT_EXPERT";

/// The demo events, one JSON line each.
pub fn generate() -> String {
    let mut rng = Rng(0x5EED_CAFE_F00D_0001);
    let mut out = Writer { lines: Vec::new(), partner: String::new(), n: 0 };
    for p in 0..PARTNERS {
        out.partner = format!("DEMO-{:03}", p + 1);
        out.n = 0;
        match p % 6 {
            // Infrastructure, SMB: qualified.
            0 | 1 => {
                let current = 20_000 + rng.below(5_000);
                infrastructure(&mut out, &mut rng, 3, current);
            }
            // Infrastructure, SMB: one or two points short (growth of 7 % or 6 %).
            2 => {
                let growth = 6 + rng.below(2);
                infrastructure(&mut out, &mut rng, 2, 20_000 * (100 + growth) / 100 - 1_200);
            }
            // Data & AI, Enterprise: qualified.
            3 => data_ai_enterprise(&mut out, &mut rng),
            // Anything: a random mix, mostly far from qualifying.
            _ => random(&mut out, &mut rng),
        }
    }
    // Rejected lines: what a careless producer sends.
    out.lines.push(r#"{"type":"acr","event_id":"bad-1","partner_id":"DEMO-001","customer_id":"C9","solution_area":"DATA_AI","attribution":"PAL","month":"2024-13","amount_micros":"1"}"#.into());
    out.lines.push(r#"{"type":"deployment","event_id":"bad-2","partner_id":"DEMO-002","deployment_id":"d","solution_area":"DATA_AI","service":"SQL","attribution":"PAL","deployed_on":"2024-02-03"}"#.into());
    out.lines.push("not json at all".into());
    out.lines.push(r#"{"type":"refund","event_id":"bad-3","partner_id":"DEMO-003"}"#.into());
    let mut text = out.lines.join("\n");
    text.push('\n');
    text
}

/// New SMB customers in Infrastructure (600 USD each in M), both skilling subcategories
/// full, one deployment, and growth of M over M-12 decided by `current` (the base customer's
/// ACR in M) against 20,000 USD a year before.
fn infrastructure(out: &mut Writer, rng: &mut Rng, new_customers: usize, current: u64) {
    for c in 0..new_customers {
        out.acr(&format!("N{c}"), "SMB", "INFRASTRUCTURE", "2024-06", 600);
    }
    out.acr("BASE", "SMB", "INFRASTRUCTURE", "2023-06", 20_000);
    out.acr("BASE", "SMB", "INFRASTRUCTURE", "2024-06", current);
    out.cert("admin", AAA);
    out.cert("architect", ASAE);
    for i in 0..4 {
        out.cert(&format!("net{i}"), "AZURE_NETWORK_ENGINEER_ASSOCIATE");
        out.cert(&format!("vdi{i}"), "AZURE_VIRTUAL_DESKTOP_SPECIALTY");
    }
    out.deployment("INFRASTRUCTURE", rng.below(28));
}

/// Over 1M USD of ACR (Enterprise path) and a full Data & AI designation.
fn data_ai_enterprise(out: &mut Writer, rng: &mut Rng) {
    out.acr("BIG", "ENTERPRISE", "INFRASTRUCTURE", "2024-03", 1_200_000 + rng.below(100_000));
    for c in 0..3 {
        out.acr(&format!("D{c}"), "ENTERPRISE", "DATA_AI", "2024-06", 1_500 + rng.below(500));
    }
    for i in 0..2 {
        out.cert(&format!("admin{i}"), AAA);
        out.cert(&format!("architect{i}"), ASAE);
    }
    for i in 0..10 {
        out.cert(&format!("data{i}"), "AZURE_DATA_ENGINEER_ASSOCIATE");
    }
    for d in 0..1 + rng.below(4) {
        out.deployment("DATA_AI", d * 7);
    }
}

fn random(out: &mut Writer, rng: &mut Rng) {
    const AREAS: [&str; 3] = ["DATA_AI", "DIGITAL_APP_INNOVATION", "INFRASTRUCTURE"];
    const SEGMENTS: [&str; 4] = ["SMB", "SMC", "ENTERPRISE", "UNKNOWN"];
    const CERTS: [&str; 6] = [
        AAA,
        ASAE,
        "AZURE_DEVELOPER_ASSOCIATE",
        "AZURE_DEVOPS_ENGINEER_EXPERT",
        "AZURE_AI_ENGINEER_ASSOCIATE",
        "AZURE_NETWORK_ENGINEER_ASSOCIATE",
    ];
    for _ in 0..3 + rng.below(12) {
        let month = format!("{}-{:02}", 2023 + rng.below(2), 1 + rng.below(12));
        let month = if month.as_str() > "2024-06" { "2024-06".to_owned() } else { month };
        let customer = format!("R{}", rng.below(6));
        let segment = SEGMENTS[rng.below(4) as usize];
        let area = AREAS[rng.below(3) as usize];
        out.acr(&customer, segment, area, &month, 50 + rng.below(2_000));
    }
    for i in 0..rng.below(6) {
        out.cert(&format!("u{i}"), CERTS[rng.below(6) as usize]);
    }
    for _ in 0..rng.below(3) {
        out.deployment(AREAS[rng.below(3) as usize], rng.below(28));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Partners;
    use crate::events::JsonLines;
    use crate::rules::{Path, RuleBook};

    #[test]
    fn bundled_copy_is_the_generated_dataset() {
        assert!(BUNDLED == generate(), "demo/events.jsonl is stale: run `pcs demo-data > demo/events.jsonl`");
    }

    #[test]
    fn the_demo_has_what_the_tour_shows() {
        let mut partners = Partners::default();
        let mut rejected = 0;
        for item in JsonLines::new(generate().as_bytes()) {
            match item.unwrap().1.map_err(|e| e.to_string()).and_then(|e| partners.apply(&e).map_err(|e| e.to_string()))
            {
                Ok(_) => {}
                Err(_) => rejected += 1,
            }
        }
        let rules = RuleBook::embedded();
        let reports: Vec<_> = partners.evaluate(crate::calendar::parse_date(DEMO_AS_OF).unwrap(), &rules).collect();
        assert!(reports.len() >= 50);
        assert!(reports.iter().any(|r| r.path == Path::Smb) && reports.iter().any(|r| r.path == Path::Enterprise));
        let qualified = reports.iter().filter(|r| r.designations.iter().any(|d| d.qualified)).count();
        let short = reports
            .iter()
            .filter(|r| {
                r.designations
                    .iter()
                    .any(|d| !d.qualified && d.total >= 68 && d.subcategories.iter().all(|s| s.points > 0))
            })
            .count();
        assert!(qualified >= 10, "{qualified} qualified");
        assert!(short >= 5, "{short} one or two points short");
        assert!(rejected >= 4, "{rejected} rejected");
    }
}
