//! The EQL subset's semantics, pinned case by case (DESIGN.md, "Rules"):
//! case rules, `*` crossing `/`, whole-value matching, lists on the right of
//! `:`, arrays, missing fields, `not`, precedence, escapes, numbers; and
//! every operator on every shape of value, plain and negated, as
//! Elasticsearch computes it, each row naming where (ARCHITECTURE.md,
//! "EQL semantics").

use mapwatch::rule::eql::parse_query;
use mapwatch::rule::json::JsonEvent;
use serde_json::{Value, json};

/// A process event with the given fields merged in (dotted keys allowed).
fn process(fields: Value) -> Value {
    let mut doc = json!({"event": {"category": ["process"], "type": ["start"], "action": "exec"}, "host": {"os": {"type": "linux"}}});
    if let (Some(doc), Some(fields)) = (doc.as_object_mut(), fields.as_object()) {
        for (k, v) in fields {
            doc.insert(k.clone(), v.clone());
        }
    }
    doc
}

fn eval(query: &str, doc: &Value) -> bool {
    let q = parse_query(query).unwrap_or_else(|e| panic!("{query}: {e} at {}", e.offset));
    let mut event = JsonEvent::new(doc);
    use mapwatch::rule::eval::Event;
    let mapwatch::rule::eql::Shape::Event(step) = q.shape else {
        panic!("{query}: not a single-event query");
    };
    event.is_category(step.category) && step.condition.matches(&mut event)
}

const SEED: &str = r#"process where host.os.type == "linux" and event.type == "start" and event.action == "exec" and
process.name in ("cat", "grep") and process.args : "/proc/*/maps" and process.entry_leader.name in (
"bash", "dash", "sh", "tcsh", "csh", "zsh", "ksh", "fish"
)"#;

#[test]
fn semantics_table() {
    let cat = || {
        process(
            json!({"process.name": "cat", "process.pid": 42, "process.args": ["cat", "/proc/1/maps"], "process.args_count": 2}),
        )
    };
    let named = |name: &str| process(json!({"process.name": name}));
    let args = |a: Value| process(json!({"process.args": a}));
    let seed_event = |name: &str, arg: &str, leader: Option<&str>| {
        let mut doc = process(json!({"process.name": name, "process.args": [name, arg]}));
        if let Some(leader) = leader {
            doc["process.entry_leader.name"] = json!(leader);
        }
        doc
    };
    let cases: Vec<(&str, Value, bool, &str)> = vec![
        // == and != are case-sensitive, exact, without wildcards.
        (
            r#"process where process.name == "cat""#,
            named("cat"),
            true,
            "== exact",
        ),
        (
            r#"process where process.name == "cat""#,
            named("CAT"),
            false,
            "== is case-sensitive",
        ),
        (
            r#"process where process.name == "c*""#,
            named("cat"),
            false,
            "== has no wildcards",
        ),
        (
            r#"process where process.name == "c*""#,
            named("c*"),
            true,
            "== compares the star literally",
        ),
        (
            r#"process where process.name != "cat""#,
            named("grep"),
            true,
            "!= differs",
        ),
        (
            r#"process where process.name != "cat""#,
            named("cat"),
            false,
            "!= same",
        ),
        (
            r#"process where process.name != "cat""#,
            process(json!({})),
            true,
            "!= on a missing field: must_not term matches it",
        ),
        (
            r#"process where process.name != "CAT""#,
            named("cat"),
            true,
            "!= is case-sensitive",
        ),
        // in / in~
        (
            r#"process where process.name in ("cat", "grep")"#,
            named("grep"),
            true,
            "in: member",
        ),
        (
            r#"process where process.name in ("cat", "grep")"#,
            named("CAT"),
            false,
            "in is case-sensitive: CAT",
        ),
        (
            r#"process where process.name in ("cat", "grep")"#,
            named("cats"),
            false,
            "in is whole-value",
        ),
        (
            r#"process where process.name in~ ("cat", "grep")"#,
            named("CAT"),
            true,
            "in~ is case-insensitive",
        ),
        (
            r#"process where process.name in~ ("CAT")"#,
            named("cat"),
            true,
            "in~ folds the list too",
        ),
        (
            r#"process where process.name in ("c*")"#,
            named("cat"),
            false,
            "in has no wildcards",
        ),
        (
            r#"process where process.name not in ("cat", "grep")"#,
            named("head"),
            true,
            "not in",
        ),
        (
            r#"process where process.name not in ("cat", "grep")"#,
            named("cat"),
            false,
            "not in: member",
        ),
        (
            r#"process where process.name not in~ ("CAT")"#,
            named("cat"),
            false,
            "not in~",
        ),
        (
            r#"process where process.name not in ("cat")"#,
            process(json!({})),
            true,
            "not in on a missing field: must_not terms matches it",
        ),
        // `:` — case-insensitive wildcard, whole value, * crosses /
        (
            r#"process where process.name : "cat""#,
            named("CAT"),
            true,
            ": without wildcard is insensitive equality",
        ),
        (
            r#"process where process.name : "ca?""#,
            named("cat"),
            true,
            ": ? is one character",
        ),
        (
            r#"process where process.name : "ca?""#,
            named("ca"),
            false,
            ": ? is exactly one character",
        ),
        (
            r#"process where process.name : "c*""#,
            named("cat"),
            true,
            ": * suffix",
        ),
        (
            r#"process where process.name : "a*""#,
            named("cat"),
            false,
            ": is anchored at the start",
        ),
        (
            r#"process where process.name : "*a""#,
            named("cat"),
            false,
            ": is anchored at the end",
        ),
        (
            r#"process where process.args : "/proc/*/maps""#,
            args(json!(["/proc/self/maps"])),
            true,
            "self",
        ),
        (
            r#"process where process.args : "/proc/*/maps""#,
            args(json!(["/proc/1/task/1/maps"])),
            true,
            "* crosses /",
        ),
        (
            r#"process where process.args : "/proc/*/maps""#,
            args(json!(["/proc//1/maps"])),
            true,
            "double slash inside",
        ),
        (
            r#"process where process.args : "/proc/*/maps""#,
            args(json!(["/PROC/1/MAPS"])),
            true,
            "upper case",
        ),
        (
            r#"process where process.args : "/proc/*/maps""#,
            args(json!(["/proc/1/smaps"])),
            false,
            "smaps",
        ),
        (
            r#"process where process.args : "/proc/*/maps""#,
            args(json!(["/proc/1/numa_maps"])),
            false,
            "numa_maps",
        ),
        (
            r#"process where process.args : "/proc/*/maps""#,
            args(json!(["//proc/1/maps"])),
            false,
            "leading //",
        ),
        (
            r#"process where process.args : "/proc/*/maps""#,
            args(json!(["--file=/proc/1/maps"])),
            false,
            "prefix",
        ),
        (
            r#"process where process.args : "/proc/*/maps""#,
            args(json!(["/proc/1/maps.bak"])),
            false,
            "suffix",
        ),
        (
            r#"process where process.args : "/proc/*/maps""#,
            args(json!(["/proc/maps"])),
            false,
            "* needs its slashes",
        ),
        (
            r#"process where process.args : ("x*", "/proc/*/maps")"#,
            args(json!(["/proc/1/maps"])),
            true,
            "list on the right of :",
        ),
        (
            r#"process where process.args : ("x*", "y*")"#,
            args(json!(["/proc/1/maps"])),
            false,
            "list: none matches",
        ),
        (
            r#"process where process.name : """#,
            named(""),
            true,
            "empty pattern, empty value",
        ),
        (
            r#"process where process.name : "*""#,
            named(""),
            true,
            "* matches the empty value",
        ),
        (
            r#"process where process.name : "*""#,
            process(json!({})),
            false,
            "* does not match a missing field",
        ),
        // like / like~
        (
            r#"process where process.args like "/proc/*/maps""#,
            args(json!(["/proc/1/maps"])),
            true,
            "like matches",
        ),
        (
            r#"process where process.args like "/proc/*/maps""#,
            args(json!(["/PROC/1/MAPS"])),
            false,
            "like is case-sensitive",
        ),
        (
            r#"process where process.args like~ "/proc/*/maps""#,
            args(json!(["/PROC/1/MAPS"])),
            true,
            "like~ is not",
        ),
        (
            r#"process where process.args like ("/etc/*", "/proc/*")"#,
            args(json!(["/proc/x"])),
            true,
            "like with a list",
        ),
        // Arrays: any element
        (
            r#"process where process.args == "cat""#,
            cat(),
            true,
            "args include argv[0]",
        ),
        (
            r#"process where process.args : "/proc/*/maps""#,
            cat(),
            true,
            "any element matches",
        ),
        (
            r#"process where process.args : "/proc/*/maps""#,
            args(json!(["cat", "/etc/passwd"])),
            false,
            "no element matches",
        ),
        (
            r#"process where process.args != "cat""#,
            args(json!(["cat", "x"])),
            false,
            "!= on an array: one element equals, so must_not term fails",
        ),
        (
            r#"process where process.args != "cat""#,
            args(json!(["cat"])),
            false,
            "!= on an array: none differs",
        ),
        (
            r#"process where process.args in ("x", "y")"#,
            args(json!(["a", "y"])),
            true,
            "in on an array",
        ),
        (
            r#"process where process.args : "*""#,
            args(json!([])),
            false,
            "an empty array is missing",
        ),
        (
            r#"process where process.args : "*""#,
            args(json!([null, null])),
            false,
            "an array of nulls is missing",
        ),
        // Missing fields and null
        (
            SEED,
            seed_event("cat", "/proc/1/maps", None),
            false,
            "seed: unresolved entry leader never matches",
        ),
        (
            r#"process where not process.entry_leader.name in ("bash")"#,
            process(json!({})),
            true,
            "not over a missing field: must_not matches",
        ),
        (
            r#"process where process.entry_leader.name == null"#,
            process(json!({})),
            true,
            "== null: missing",
        ),
        (
            r#"process where process.entry_leader.name != null"#,
            process(json!({})),
            false,
            "!= null: missing",
        ),
        (
            r#"process where process.name != null"#,
            named("cat"),
            true,
            "!= null: present",
        ),
        (
            r#"process where process.name == null"#,
            named("cat"),
            false,
            "== null: present",
        ),
        (
            r#"process where process.name == null"#,
            process(json!({"process.name": null})),
            true,
            "JSON null is missing",
        ),
        (
            r#"process where process.title == "x" or process.name == "cat""#,
            named("cat"),
            true,
            "missing or true",
        ),
        (
            r#"process where process.title == "x" or process.name == "dog""#,
            named("cat"),
            false,
            "missing or false",
        ),
        (
            r#"process where process.title == "x" and process.name == "dog""#,
            named("cat"),
            false,
            "missing and false",
        ),
        (
            r#"process where not (process.title == "x" and process.name == "dog")"#,
            named("cat"),
            true,
            "not (missing and false)",
        ),
        (
            r#"process where not (process.title == "x" or process.name == "dog")"#,
            named("cat"),
            true,
            "not (missing or false): must_not of a bool that matched nothing",
        ),
        // not
        (
            r#"process where not process.name == "cat""#,
            named("cat"),
            false,
            "not true",
        ),
        (
            r#"process where not process.name == "cat""#,
            named("grep"),
            true,
            "not false",
        ),
        (
            r#"process where not not process.name == "cat""#,
            named("cat"),
            true,
            "double not",
        ),
        // Precedence: not > and > or; parentheses
        (
            r#"process where process.name == "cat" or process.name == "x" and process.pid == 1"#,
            cat(),
            true,
            "and binds tighter than or",
        ),
        (
            r#"process where (process.name == "cat" or process.name == "x") and process.pid == 1"#,
            cat(),
            false,
            "parentheses",
        ),
        (
            r#"process where not process.name == "x" and process.pid == 42"#,
            cat(),
            true,
            "not binds tighter than and",
        ),
        (
            r#"process where not (process.name == "cat" and process.pid == 1)"#,
            cat(),
            true,
            "not over a group",
        ),
        (
            r#"process where process.name == "x" or process.name == "y" or process.pid == 42"#,
            cat(),
            true,
            "or chain",
        ),
        // Numbers
        (r#"process where process.pid == 42"#, cat(), true, "long =="),
        (
            r#"process where process.pid == 43"#,
            cat(),
            false,
            "long == differs",
        ),
        (
            r#"process where process.pid in (1, 42)"#,
            cat(),
            true,
            "long in",
        ),
        (r#"process where process.pid != 1"#, cat(), true, "long !="),
        (
            r#"process where process.args_count == 2"#,
            cat(),
            true,
            "args_count",
        ),
        (
            r#"process where process.pid == -1"#,
            cat(),
            false,
            "negative literal",
        ),
        (
            r#"process where user.id == "0""#,
            process(json!({"user": {"id": 0}})),
            true,
            "numbers coerce to keyword text",
        ),
        // Strings and escapes
        (
            r#"process where process.args == "a\"b""#,
            args(json!(["a\"b"])),
            true,
            "escaped quote",
        ),
        (
            r#"process where process.args == "a\\b""#,
            args(json!(["a\\b"])),
            true,
            "escaped backslash",
        ),
        (
            r#"process where process.args == "line\nbreak""#,
            args(json!(["line\nbreak"])),
            true,
            "escaped newline",
        ),
        (
            r#"process where process.args == "tab\there""#,
            args(json!(["tab\there"])),
            true,
            "escaped tab",
        ),
        (
            r#"process where process.args == """C:\raw\n""""#,
            args(json!(["C:\\raw\\n"])),
            true,
            "raw string keeps backslashes",
        ),
        (
            r#"process where process.args == "\u{e9}t\u{E9}""#,
            args(json!(["été"])),
            true,
            "unicode escape",
        ),
        // Unicode case folding
        (
            r#"process where process.name : "ÉTÉ""#,
            named("été"),
            true,
            ": folds non-ASCII",
        ),
        (
            r#"process where process.name in~ ("ΣΟΦΙΑ")"#,
            named("σοφια"),
            true,
            "in~ folds Greek",
        ),
        (
            r#"process where process.name == "é""#,
            named("É"),
            false,
            "== does not fold",
        ),
        // Field names
        (
            r#"process where process.entry_leader.entry_meta.type == "init""#,
            process(json!({"process": {"entry_leader": {"entry_meta": {"type": "init"}}}})),
            true,
            "nested objects",
        ),
        (
            r#"process where `process.name` == "cat""#,
            named("cat"),
            true,
            "backquoted field",
        ),
        // Categories
        (
            r#"file where file.path : "/proc/*/maps""#,
            args(json!(["x"])),
            false,
            "file rule on a process event",
        ),
        (
            r#"file where file.path : "/proc/*/maps""#,
            json!({"event": {"category": "file"}, "file": {"path": "/proc/9/maps"}}),
            true,
            "file rule on a file event",
        ),
        (r#"process where true"#, named("x"), true, "constant true"),
        (
            r#"process where false"#,
            named("x"),
            false,
            "constant false",
        ),
        (
            r#"process where process.name == "cat""#,
            json!({"process": {"name": "cat"}}),
            false,
            "no event.category: no category matches",
        ),
        // The seed query as a whole
        (
            SEED,
            seed_event("cat", "/proc/1/maps", Some("bash")),
            true,
            "seed: cat under bash",
        ),
        (
            SEED,
            seed_event("grep", "/proc/self/maps", Some("fish")),
            true,
            "seed: grep under fish",
        ),
        (
            SEED,
            seed_event("cat", "/PROC/1/MAPS", Some("zsh")),
            true,
            "seed: upper-case path",
        ),
        (
            SEED,
            seed_event("cat", "/proc/1/maps", Some("python3")),
            false,
            "seed: non-shell leader",
        ),
        (
            SEED,
            seed_event("cat", "/proc/1/maps", Some("Bash")),
            false,
            "seed: leader names are case-sensitive",
        ),
        (
            SEED,
            seed_event("head", "/proc/1/maps", Some("bash")),
            false,
            "seed: head",
        ),
        (
            SEED,
            seed_event("CAT", "/proc/1/maps", Some("bash")),
            false,
            "seed: CAT",
        ),
        (
            SEED,
            seed_event("cat", "/proc/1/smaps", Some("bash")),
            false,
            "seed: smaps",
        ),
    ];
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let mut failures = Vec::new();
    for (query, event, expected, why) in &cases {
        if eval(query, event) != *expected {
            failures.push(format!("{why}: `{query}` on {event} should be {expected}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn seed_event_fields_outside_the_query_do_not_matter() {
    let mut doc = process(
        json!({"process.name": "cat", "process.args": ["cat", "/proc/1/maps"], "process.entry_leader.name": "bash"}),
    );
    assert!(eval(SEED, &doc));
    doc["event"]["type"] = json!(["start", "change"]);
    assert!(eval(SEED, &doc), "event.type is multi-valued in ECS");
    doc["event"]["type"] = json!(["end"]);
    assert!(!eval(SEED, &doc));
    doc["event"]["type"] = json!("start");
    doc["host"]["os"]["type"] = json!("windows");
    assert!(!eval(SEED, &doc));
}

/// The value shapes each operator is pinned on.
/// "Match" is the positive leaf query under the operator: the literal, the
/// pattern, the list (for `!=` the `term` of `==`, for `not in` the `terms`
/// of `in`).
const SHAPES: [&str; 6] = [
    "single value that matches",
    "single value that does not",
    "array with a value that matches",
    "array with no value that matches",
    "missing field",
    "explicit null",
];

/// One operator, on every shape, plain and under `not (…)`.
struct Row {
    /// The comparison, on `field`.
    condition: &'static str,
    field: &'static str,
    /// A value that the positive leaf query matches, and one it does not.
    hit: Value,
    miss: Value,
    plain: [bool; 6],
    negated: [bool; 6],
    /// Where Elasticsearch computes this.
    source: &'static str,
}

/// What a positive leaf query (`term`, `terms`, `wildcard`) returns on each
/// shape: any value satisfies it; nothing on a missing field or null.
const ANY: [bool; 6] = [true, false, true, false, false, false];
/// Its `must_not`: no value satisfies it, which a missing field meets.
const NONE: [bool; 6] = [false, true, false, true, true, true];

/// Sources, in elastic/elasticsearch (x-pack/plugin/…), read for this table.
const TERM: &str = "ql planner/ExpressionTranslators.BinaryComparisons: Equals -> TermQuery; a term query matches a document when any of the field's values equals (Elasticsearch reference, 'Arrays' and 'Term query'); a missing field has no value to match";
const NOT_EQUALS: &str = "ql ExpressionTranslators.BinaryComparisons: NotEquals -> new NotQuery(TermQuery); ql querydsl/query/NotQuery.asBuilder -> bool.must_not";
const NOT: &str = "ql ExpressionTranslators.Nots: not X -> X's query negated (NotQuery, bool.must_not); a script query is negated inside the script instead";
const INSENSITIVE: &str = "eql planner/QueryTranslator.InsensitiveBinaryComparisons: InsensitiveEquals (`:` without * or ?) -> TermQuery(case_insensitive=true)";
const WILDCARD: &str = "eql optimizer/Optimizer.ReplaceWildcards: `:` with * or ? -> Like(case-insensitive); ql ExpressionTranslators.Likes -> WildcardQuery";
const LIKE: &str =
    "ql ExpressionTranslators.Likes: Like/WildcardLike -> WildcardQuery(pattern, caseInsensitive)";
const IN: &str = "ql ExpressionTranslators.InComparisons: In -> TermsQuery (any value in the set)";
const IS_NULL: &str = "eql Optimizer.ReplaceNullChecks: `== null` -> IsNull; ql ExpressionTranslators.IsNulls -> NotQuery(ExistsQuery); exists matches no document whose field is missing, null, [] or [null] (Elasticsearch reference, 'Exists query')";
const IS_NOT_NULL: &str = "eql Optimizer.ReplaceNullChecks: `!= null` -> IsNotNull; ql ExpressionTranslators.IsNotNulls -> ExistsQuery";
const RANGE: &str = "ql ExpressionTranslators.BinaryComparisons: GreaterThan, GreaterThanOrEqual, LessThan, LessThanOrEqual -> RangeQuery; a range query matches when any value is in range (numbers by value, keywords by their UTF-8 bytes)";
const REGEX: &str = "ql ExpressionTranslators.Likes: RLike -> RegexQuery -> regexp query (Lucene RegExp, ALL flags, whole value; regex~: ASCII_CASE_INSENSITIVE)";
const SCRIPT: &str = "ql ExpressionTranslators: a function has no query -> ScriptQuery; InternalQlScriptUtils.docValue reads the first doc value (doc values are sorted: the smallest); null arguments give null, and a script matches only on true, negated or not";
const PREFIX: &str = "eql planner/QueryTranslator.CaseSensitiveScalarFunctions: StartsWith(field, literal) -> PrefixQuery (caseInsensitive for startsWith~): a query, so any value, and must_not under not";
const CONTAINS: &str = "eql planner/QueryTranslator.CaseSensitiveScalarFunctions: case-sensitive StringContains(field, literal) -> WildcardQuery *literal* (its characters escaped); stringContains~ stays a script";
const OPTIONAL: &str = "eql parser: `?field` is the field when the mapping has it (optional only when the mapping lacks it)";

fn rows() -> Vec<Row> {
    // Under `not (…)` each row is the complement: a query-DSL filter is
    // two-valued. The table still checks both.
    let row = |condition, field, hit: Value, miss: Value, plain: [bool; 6], source| Row {
        condition,
        field,
        hit,
        miss,
        plain,
        negated: plain.map(|b| !b),
        source,
    };
    let keyword = |condition, hit: &str, miss: &str, plain, source| {
        row(
            condition,
            "process.args",
            json!(hit),
            json!(miss),
            plain,
            source,
        )
    };
    let present = [true, true, true, true, false, false];
    let absent = present.map(|b| !b);
    vec![
        keyword(r#"process.args == "-p""#, "-p", "-P", ANY, TERM),
        keyword(r#"process.args != "-p""#, "-p", "-P", NONE, NOT_EQUALS),
        keyword(r#"process.args : "-P""#, "-p", "-x", ANY, INSENSITIVE),
        keyword(
            r#"process.args : "/PROC/*/maps""#,
            "/proc/1/MAPS",
            "/proc/1/smaps",
            ANY,
            WILDCARD,
        ),
        keyword(
            r#"process.args : ("-x", "/proc/?/maps")"#,
            "/proc/1/maps",
            "/proc/12/maps",
            ANY,
            WILDCARD,
        ),
        keyword(
            r#"process.args like "/proc/*""#,
            "/proc/1",
            "/PROC/1",
            ANY,
            LIKE,
        ),
        keyword(
            r#"process.args like~ "/PROC/*""#,
            "/proc/1",
            "/sys/1",
            ANY,
            LIKE,
        ),
        keyword(
            r#"process.args in ("-p", "--pid")"#,
            "--pid",
            "--PID",
            ANY,
            IN,
        ),
        keyword(r#"process.args in~ ("--PID")"#, "--pid", "-p", ANY, IN),
        keyword(
            r#"process.args not in ("-p", "--pid")"#,
            "-p",
            "-x",
            NONE,
            NOT,
        ),
        keyword(
            r#"process.args not in~ ("--PID")"#,
            "--pid",
            "-x",
            NONE,
            NOT,
        ),
        keyword("process.args == null", "x", "x", absent, IS_NULL),
        keyword("process.args != null", "x", "x", present, IS_NOT_NULL),
        row(
            "process.pid == 1",
            "process.pid",
            json!(1),
            json!(2),
            ANY,
            TERM,
        ),
        row(
            "process.pid != 1",
            "process.pid",
            json!(1),
            json!(2),
            NONE,
            NOT_EQUALS,
        ),
        row(
            "process.pid in (1, 7)",
            "process.pid",
            json!(7),
            json!(2),
            ANY,
            IN,
        ),
        keyword(r#"process.args > "m""#, "n", "a", ANY, RANGE),
        keyword(r#"process.args <= "b""#, "b", "c", ANY, RANGE),
        row(
            "process.args_count >= 3",
            "process.args_count",
            json!(3),
            json!(2),
            ANY,
            RANGE,
        ),
        row(
            "process.pid < 10",
            "process.pid",
            json!(9),
            json!(10),
            ANY,
            RANGE,
        ),
        keyword(
            r#"process.args regex "-[a-z]+""#,
            "-abc",
            "x-abc",
            ANY,
            REGEX,
        ),
        keyword(
            r#"process.args regex "-[a-z]+""#,
            "-abc",
            "-ABC",
            ANY,
            REGEX,
        ),
        keyword(r#"process.args regex "-abc""#, "-abc", "-ABC", ANY, REGEX),
        keyword(r#"process.args regex~ "-ABC""#, "-abc", "-abd", ANY, REGEX),
        keyword(r#"process.args regex~ "[A-Z]+""#, "ABC", "abc", ANY, REGEX),
        keyword(
            r#"process.args regex ("x", ".*[0-9]{1,3}\\.[0-9]{1,3}.*")"#,
            "to 10.1 now",
            "to 10 now",
            ANY,
            REGEX,
        ),
        keyword(r#"?process.args == "-p""#, "-p", "-P", ANY, OPTIONAL),
        keyword(r#"?process.args != "-p""#, "-p", "-P", NONE, OPTIONAL),
        // The smallest value decides: "-long" < "abc".
        Row {
            condition: "length(process.args) > 3",
            field: "process.args",
            hit: json!("-long"),
            miss: json!("abc"),
            plain: [true, false, true, false, false, false],
            negated: [false, true, false, true, false, false],
            source: SCRIPT,
        },
        keyword(
            r#"startsWith(process.args, "/tmp/")"#,
            "/tmp/x",
            "x/tmp/",
            ANY,
            PREFIX,
        ),
        keyword(
            r#"startsWith(process.args, "/TMP/")"#,
            "/TMP/x",
            "/tmp/x",
            ANY,
            PREFIX,
        ),
        keyword(
            r#"startsWith~(process.args, "/TMP/")"#,
            "/tmp/x",
            "x/tmp/",
            ANY,
            PREFIX,
        ),
        keyword(
            r#"startsWith(process.args, "a*")"#,
            "a*b",
            "ab",
            ANY,
            PREFIX,
        ),
        keyword(
            r#"stringContains(process.args, "pty")"#,
            "a pty b",
            "a PTY b",
            ANY,
            CONTAINS,
        ),
        Row {
            condition: r#"endsWith(process.args, ".so")"#,
            field: "process.args",
            hit: json!("a.so"),
            miss: json!("b.so.1"),
            plain: [true, false, true, false, false, false],
            negated: [false, true, false, true, false, false],
            source: SCRIPT,
        },
        Row {
            condition: r#"stringContains~(process.args, "PTY")"#,
            field: "process.args",
            hit: json!("a pty b"),
            miss: json!("b"),
            plain: [true, false, true, false, false, false],
            negated: [false, true, false, true, false, false],
            source: SCRIPT,
        },
        row(
            "mapwatch.read.self == true",
            "mapwatch.read.self",
            json!(true),
            json!(false),
            ANY,
            TERM,
        ),
        row(
            "mapwatch.read.self != true",
            "mapwatch.read.self",
            json!(true),
            json!(false),
            NONE,
            NOT_EQUALS,
        ),
    ]
}

/// The event for a row's shape `i` (see [`SHAPES`]); the arrays pair the
/// row's values so that "with one that does" holds one of each.
fn shaped(row: &Row, i: usize) -> Value {
    let value = match i {
        0 => Some(row.hit.clone()),
        1 => Some(row.miss.clone()),
        2 => Some(json!([row.miss, row.hit])),
        3 => Some(json!([row.miss, row.miss])),
        4 => None,
        _ => Some(Value::Null),
    };
    let mut doc = process(json!({}));
    if let Some(value) = value {
        doc[row.field] = value;
    }
    doc
}

#[test]
fn every_operator_on_every_shape_plain_and_negated_as_elasticsearch_computes_it() {
    let mut failures = Vec::new();
    let rows = rows();
    for row in &rows {
        for (i, shape) in SHAPES.iter().enumerate() {
            let doc = shaped(row, i);
            for (query, expected) in [
                (format!("process where {}", row.condition), row.plain[i]),
                (
                    format!("process where not ({})", row.condition),
                    row.negated[i],
                ),
            ] {
                if eval(&query, &doc) != expected {
                    failures.push(format!(
                        "`{query}` on a {shape} ({doc}) should be {expected}; Elasticsearch: {}",
                        row.source
                    ));
                }
            }
        }
    }
    assert!(rows.len() >= 37, "{} rows", rows.len());
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from Elasticsearch:\n{}",
        failures.len(),
        rows.len() * SHAPES.len() * 2,
        failures.join("\n")
    );
}

#[test]
fn functions_of_two_fields_read_one_value_of_each() {
    let suid = |exe: &str, line: &str| {
        process(json!({"process.executable": exe, "process.command_line": line}))
    };
    let query = "process where startsWith(process.executable, process.command_line)";
    assert!(eval(query, &suid("/tmp/x", "/tmp/x")));
    assert!(
        eval(query, &suid("/tmp/xy", "/tmp/x")),
        "the command line is the executable's prefix"
    );
    assert!(!eval(query, &suid("/tmp/x", "/tmp/x -p")));
    assert!(
        !eval(query, &process(json!({"process.executable": "/tmp/x"}))),
        "null argument"
    );
    assert!(
        !eval(
            &query.replace("where ", "where not "),
            &process(json!({"process.executable": "/tmp/x"}))
        ),
        "not of null is null"
    );
    let long = "process where length(process.command_line) > 50";
    assert!(eval(
        long,
        &process(json!({"process.command_line": "x".repeat(51)}))
    ));
    assert!(
        !eval(
            long,
            &process(json!({"process.command_line": "é".repeat(50)}))
        ),
        "characters, not bytes"
    );
}

#[test]
fn optional_and_never_filled_fields_compare_as_missing_everywhere() {
    // Unknown to mapwatch and ECS: only as `?field`; present in the
    // document or not, no event of mapwatch's has it.
    let doc = process(json!({"process.made_up": "x"}));
    for (query, expected) in [
        (r#"?process.made_up == "x""#, false),
        (r#"?process.made_up != "x""#, true),
        (r#"not ?process.made_up in ("x")"#, true),
        (r#"?process.made_up == null"#, true),
        (r#"?process.made_up : "x*""#, false),
        (r#"?process.made_up regex "x""#, false),
        (r#"?process.made_up > 1"#, false),
        (r#"length(?process.made_up) > 0"#, false),
        (r#"not length(?process.made_up) > 0"#, false),
        // ECS fields no Linux event of mapwatch's has.
        (r#"process.parent.code_signature.trusted == true"#, false),
        (r#"not process.parent.code_signature.trusted == true"#, true),
        (r#"process.pe.original_file_name != "x.exe""#, true),
    ] {
        assert_eq!(
            eval(&format!("process where {query}"), &doc),
            expected,
            "{query}"
        );
    }
    let err = parse_query(r#"process where process.made_up == "x""#).expect_err("unknown field");
    assert!(err.message.contains("?process.made_up"), "{}", err.message);
}
