use super::*;

#[test]
fn key_map_names_nested_and_array_keys() {
    let text = "[agent]\nconcurrency = 4\n\n[[mapping]]\nfolder = \"a\"\n\n[[mapping]]\nfolder = \"b\"\nexclude = [\"x\",\n  \"y\"]\n";
    let keys = KeyMap::new(text);
    let at = |needle: &str| keys.key_at(text.find(needle).unwrap()).unwrap().to_owned();
    assert_eq!(at("4"), "agent.concurrency");
    assert_eq!(at("\"a\""), "mapping[0].folder");
    assert_eq!(at("\"b\""), "mapping[1].folder");
    assert_eq!(at("\"y\""), "mapping[1].exclude");
}

#[test]
fn guess_key_for_syntax_errors() {
    let text = "[agent]\nchunk_size = \"4MiB\n";
    assert_eq!(
        guess_key(text, text.find("\"4").unwrap()),
        "agent.chunk_size"
    );
    assert_eq!(guess_key("x = \n", 3), "x");
}

#[test]
fn expand_home_and_variables() {
    std::env::set_var("OUTBOX_TEST_EXPAND", "/data");
    assert_eq!(
        expand("$OUTBOX_TEST_EXPAND/in").unwrap(),
        PathBuf::from("/data/in")
    );
    assert_eq!(
        expand("${OUTBOX_TEST_EXPAND}x").unwrap(),
        PathBuf::from("/datax")
    );
    assert_eq!(expand("a$$b").unwrap(), PathBuf::from("a$b"));
    assert_eq!(expand("cost$").unwrap(), PathBuf::from("cost$"));
    let home = directories::BaseDirs::new()
        .unwrap()
        .home_dir()
        .to_path_buf();
    assert_eq!(expand("~/x").unwrap(), home.join("x"));
    assert_eq!(expand("~").unwrap(), home);
    let e = expand("$OUTBOX_TEST_SURELY_UNSET/x").unwrap_err();
    assert!(
        e.contains("OUTBOX_TEST_SURELY_UNSET") && e.contains("not set"),
        "{e}"
    );
    assert!(expand("~bob/x").unwrap_err().contains("~user"));
}

#[test]
fn normalize_is_lexical() {
    assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
    assert!(same_or_inside(Path::new("/a/b"), Path::new("/a")));
    assert!(!same_or_inside(Path::new("/ab"), Path::new("/a")));
}

#[test]
fn defaults_match_spec() {
    let s = defaults(PathBuf::from("x.toml"));
    assert_eq!(
        s.graph.base_url.as_str(),
        "https://graph.microsoft.com/v1.0"
    );
    assert_eq!(s.auth.tenant, "common");
    assert_eq!(
        s.auth.method,
        AuthMethod::TokenEnv {
            var: "OUTBOX_ACCESS_TOKEN".into()
        }
    );
    assert_eq!(s.agent.chunk_size, 3840 * 1024);
    assert_eq!(s.agent.concurrency, 4);
    assert_eq!(s.agent.keep_done, Duration::from_secs(180 * 86_400));
    assert_eq!(s.agent.remember_sent, Duration::from_secs(90 * 86_400));
    assert!(s.mappings.is_empty());
}
