//! Checks that need more than one record: references into the catalog, host
//! ports claimed across sandboxes on one agent, route keys shared by services.
//! Pure: it judges a prospective set of records, and blames the documents of
//! the batch that would introduce a problem.

use std::collections::{BTreeMap, HashMap};

use sdp_spec::record::{Gateway, Record, Sandbox, Service};
use sdp_spec::{Document, Issue, SpecError};

/// Records by `kind/name`, as they would be after the batch.
pub type Records = BTreeMap<String, Record>;

/// Records of one kind: keys are `kind/name`, so a kind is a key range.
fn of_kind<'a>(records: &'a Records, kind: &str) -> impl Iterator<Item = &'a Record> {
    records
        .range(format!("{kind}/")..format!("{kind}0"))
        .map(|(_, r)| r)
}

pub fn services(records: &Records) -> impl Iterator<Item = &Service> {
    of_kind(records, "service").filter_map(|r| match r {
        Record::Service(s) => Some(s),
        _ => None,
    })
}

pub fn gateways(records: &Records) -> impl Iterator<Item = &Gateway> {
    of_kind(records, "gateway").filter_map(|r| match r {
        Record::Gateway(g) => Some(g),
        _ => None,
    })
}

pub fn sandboxes(records: &Records) -> impl Iterator<Item = &Sandbox> {
    of_kind(records, "sandbox").filter_map(|r| match r {
        Record::Sandbox(s) => Some(s),
        _ => None,
    })
}

/// The gateway record a sandbox runs: the one it names, or the only one.
pub fn gateway_of<'a>(records: &'a Records, sandbox: &Sandbox) -> Result<&'a Gateway, String> {
    let Some(sg) = &sandbox.gateway else {
        return Err("the sandbox has no [gateway] table".into());
    };
    match &sg.name {
        Some(name) => match records.get(&format!("gateway/{name}")) {
            Some(Record::Gateway(g)) => Ok(g),
            _ => Err(format!(
                "gateway `{name}` is not in the catalog; known gateways: {}",
                list(gateways(records).map(|g| g.name.to_string()))
            )),
        },
        None => {
            let first_two: Vec<&Gateway> = gateways(records).take(2).collect();
            match first_two.as_slice() {
                [only] => Ok(only),
                [] => Err(
                    "the catalog has no gateway record; apply one (kind = \"gateway\") first"
                        .into(),
                ),
                _ => Err(format!(
                    "the catalog has {} gateways ({}); say which with `name` in [gateway]",
                    gateways(records).count(),
                    list(gateways(records).map(|g| g.name.to_string()))
                )),
            }
        }
    }
}

pub fn service<'a>(records: &'a Records, name: &str) -> Option<&'a Service> {
    match records.get(&format!("service/{name}")) {
        Some(Record::Service(s)) => Some(s),
        _ => None,
    }
}

fn list(items: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = items.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Who claims a host port on an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Claim {
    sandbox: String,
    /// Path of the field in the sandbox document.
    path: Vec<String>,
    /// "service `eredar`" or "the gateway".
    what: String,
}

/// Checks the prospective `records` after a batch of `docs` (and deletions of
/// `deleted` keys). Returns located errors; empty means the batch is fine.
pub fn check(records: &Records, docs: &[Document], deleted: &[String]) -> Vec<SpecError> {
    let by_key: HashMap<String, &Document> = docs.iter().map(|d| (d.record.key(), d)).collect();
    let mut errors = Vec::new();

    // References from every sandbox. A change elsewhere (a deleted service,
    // a gateway deleted or added) can break a sandbox that is not in the
    // batch; then the change is refused.
    for sb in sandboxes(records) {
        let key = format!("sandbox/{}", sb.name);
        let doc = by_key.get(&key).copied();
        for name in sb.services.keys() {
            if service(records, name).is_some() {
                continue;
            }
            let msg = format!(
                "service `{name}` is not in the catalog; known services: {}",
                list(services(records).map(|s| s.name.to_string()))
            );
            match doc {
                Some(d) => errors.push(d.locate(&Issue::new(&["services", name], msg))),
                None => {
                    if let Some(gone) = deleted.iter().find(|d| **d == format!("service/{name}")) {
                        errors.push(refused_deletion(gone, &key, ""));
                    }
                }
            }
        }
        let Some(sg) = &sb.gateway else { continue };
        let Err(msg) = gateway_of(records, sb) else {
            continue;
        };
        if let Some(d) = doc {
            errors.push(d.locate(&Issue::new(&["gateway"], msg)));
            continue;
        }
        let implicit = sg.name.is_none();
        let deleted_gateway = deleted.iter().find(|d| match &sg.name {
            Some(n) => **d == format!("gateway/{n}"),
            None => d.starts_with("gateway/"),
        });
        if let Some(gone) = deleted_gateway {
            let why = if implicit {
                " (its [gateway] names none, so it runs the only gateway)"
            } else {
                ""
            };
            errors.push(refused_deletion(gone, &key, why));
        } else if implicit
            && let Some(added) = docs.iter().find(|d| matches!(d.record, Record::Gateway(_)))
        {
            errors.push(added.locate(&Issue::new(
                &["name"],
                format!(
                    "adding gateway `{}` leaves {key} without a gateway: its [gateway] names none, and with more than one gateway it must; add `name = \"...\"` to its [gateway] first",
                    added.record.name()
                ),
            )));
        }
    }

    // Route keys must be unique: the gateway could not tell two services apart.
    let mut keys: BTreeMap<String, &Service> = BTreeMap::new();
    for svc in services(records) {
        let rk = svc.route_key();
        if let Some(first) = keys.get(&rk) {
            for (this, other) in [(svc, *first), (*first, svc)] {
                if let Some(doc) = by_key.get(&format!("service/{}", this.name)) {
                    errors.push(doc.locate(&Issue::new(
                        &["route_key"],
                        format!(
                            "route key `{rk}` is already used by service `{}`; each service needs its own entry in the gateway's URL map",
                            other.name
                        ),
                    )));
                    break;
                }
            }
        } else {
            keys.insert(rk, svc);
        }
    }

    errors.extend(port_conflicts(records, &by_key, docs));
    errors
}

fn refused_deletion(gone: &str, sandbox_key: &str, why: &str) -> SpecError {
    SpecError {
        file: gone.to_string(),
        line: None,
        column: None,
        field: None,
        message: format!(
            "cannot delete {gone}: {sandbox_key} uses it{why}; change or delete that sandbox first"
        ),
    }
}

/// Two sandboxes may not publish the same host port on one agent.
fn port_conflicts(
    records: &Records,
    by_key: &HashMap<String, &Document>,
    docs: &[Document],
) -> Vec<SpecError> {
    let mut claims: BTreeMap<(String, u16), Vec<Claim>> = BTreeMap::new();
    for sb in sandboxes(records) {
        for (name, s) in &sb.services {
            if let Some(svc) = service(records, name) {
                claims
                    .entry((svc.agent.to_string(), s.host_port.get()))
                    .or_default()
                    .push(Claim {
                        sandbox: sb.name.to_string(),
                        path: vec!["services".into(), name.to_string(), "host_port".into()],
                        what: format!("service `{name}`"),
                    });
            }
        }
        if let (Some(g), Ok(gw)) = (&sb.gateway, gateway_of(records, sb)) {
            claims
                .entry((gw.agent.to_string(), g.host_port.get()))
                .or_default()
                .push(Claim {
                    sandbox: sb.name.to_string(),
                    path: vec!["gateway".into(), "host_port".into()],
                    what: "the gateway".into(),
                });
        }
    }
    let mut errors = Vec::new();
    for ((agent, port), claimants) in claims {
        let sandboxes_involved: Vec<&str> = {
            let mut v: Vec<&str> = claimants.iter().map(|c| c.sandbox.as_str()).collect();
            v.dedup();
            v
        };
        if sandboxes_involved.len() < 2 {
            continue; // clashes inside one sandbox are the spec's own check
        }
        // Blame the claimant whose document is in this batch; the other holds the port.
        for claim in &claimants {
            let Some(doc) = by_key.get(&format!("sandbox/{}", claim.sandbox)) else {
                continue;
            };
            let holder = claimants
                .iter()
                .find(|c| c.sandbox != claim.sandbox)
                .expect("two sandboxes are involved");
            let path: Vec<&str> = claim.path.iter().map(String::as_str).collect();
            errors.push(doc.locate(&Issue::new(
                &path,
                format!(
                    "host port {port} on agent `{agent}` is already taken by sandbox `{}` ({}); pick another host_port",
                    holder.sandbox, holder.what
                ),
            )));
            break;
        }
        // A catalog change (a service moved to another agent) can create a
        // clash between sandboxes that are not in the batch.
        if !claimants
            .iter()
            .any(|c| by_key.contains_key(&format!("sandbox/{}", c.sandbox)))
            && let Some(doc) = docs
                .iter()
                .find(|d| !matches!(d.record, Record::Sandbox(_)))
        {
            errors.push(doc.locate(&Issue::new(
                &["agent"],
                format!(
                    "this change makes sandboxes {} claim host port {port} on agent `{agent}`",
                    sandboxes_involved.join(" and ")
                ),
            )));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use sdp_spec::parse_toml;

    fn doc(text: &str) -> Document {
        parse_toml(text, "t.toml").unwrap()
    }

    fn svc(name: &str, agent: &str) -> Document {
        doc(&format!(
            "kind = \"service\"\nname = \"{name}\"\nrepo = \"/srv/{name}.git\"\nagent = \"{agent}\"\nimage = \"x\"\ncontainer_port = 8080\n"
        ))
    }

    fn gw() -> Document {
        doc(
            "kind = \"gateway\"\nname = \"erangel\"\nrepo = \"/srv/gw.git\"\nagent = \"gw\"\nimage = \"x\"\nmount = \"/var/www/html\"\ncontainer_port = 80\nconfig_file = \"config.php\"\n",
        )
    }

    fn sandbox(name: &str, port: u16, gw_port: u16) -> Document {
        doc(&format!(
            "kind = \"sandbox\"\nname = \"{name}\"\n[gateway]\nbranch = \"main\"\nhost_port = {gw_port}\n[services.eredar]\nbranch = \"main\"\nhost_port = {port}\n"
        ))
    }

    fn records(docs: &[&Document]) -> Records {
        docs.iter()
            .map(|d| (d.record.key(), d.record.clone()))
            .collect()
    }

    #[test]
    fn port_taken_by_another_sandbox_names_the_holder() {
        let (s, g, a, b) = (
            svc("eredar", "micro"),
            gw(),
            sandbox("alice", 9001, 8101),
            sandbox("bob", 9001, 8102),
        );
        let recs = records(&[&s, &g, &a, &b]);
        let errs = check(&recs, std::slice::from_ref(&b), &[]);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].line, Some(8));
        assert!(errs[0].message.contains("host port 9001 on agent `micro` is already taken by sandbox `alice` (service `eredar`)"), "{}", errs[0]);
    }

    #[test]
    fn same_port_on_different_agents_is_fine() {
        // The gateway runs on agent `gw`, eredar on `micro`: 9001 for both is no clash.
        let (s, g, a, b) = (
            svc("eredar", "micro"),
            gw(),
            sandbox("alice", 9001, 8101),
            sandbox("bob", 9002, 9001),
        );
        let recs = records(&[&s, &g, &a, &b]);
        assert!(check(&recs, std::slice::from_ref(&b), &[]).is_empty());
    }

    #[test]
    fn unknown_service_and_missing_gateway_are_refused() {
        let a = sandbox("alice", 9001, 8101);
        let recs = records(&[&a]);
        let errs = check(&recs, std::slice::from_ref(&a), &[]);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs[0]
                .message
                .contains("service `eredar` is not in the catalog"),
            "{}",
            errs[0]
        );
        assert!(errs[1].message.contains("no gateway record"), "{}", errs[1]);
    }

    #[test]
    fn deleting_a_used_service_is_refused() {
        let (g, a) = (gw(), sandbox("alice", 9001, 8101));
        let recs = records(&[&g, &a]);
        let errs = check(&recs, &[], &["service/eredar".into()]);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0]
                .message
                .contains("cannot delete service/eredar: sandbox/alice uses it"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn gateways_a_sandbox_runs_implicitly_cannot_vanish_or_multiply() {
        let (s, g, a) = (svc("eredar", "micro"), gw(), sandbox("alice", 9001, 8101));
        let recs = records(&[&s, &a]);
        let errs = check(&recs, &[], &["gateway/erangel".into()]);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].message.contains(
                "cannot delete gateway/erangel: sandbox/alice uses it (its [gateway] names none"
            ),
            "{}",
            errs[0]
        );

        let second = doc(&gw().text.replace("erangel", "second"));
        let recs = records(&[&s, &g, &a, &second]);
        let errs = check(&recs, std::slice::from_ref(&second), &[]);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0]
                .message
                .contains("adding gateway `second` leaves sandbox/alice without a gateway"),
            "{}",
            errs[0]
        );
        assert_eq!(errs[0].line, Some(2));
    }

    #[test]
    fn route_keys_are_unique() {
        let a = svc("eredar", "micro");
        let b = doc(&format!(
            "{}route_key = \"eredar_url\"\n",
            svc("ledger", "micro").text
        ));
        let recs = records(&[&a, &b]);
        let errs = check(&recs, std::slice::from_ref(&b), &[]);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0]
                .message
                .contains("route key `eredar_url` is already used by service `eredar`")
        );
    }
}
