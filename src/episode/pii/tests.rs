use super::*;

fn scrub(s: &PiiScrubber, text: &str) -> (String, BTreeMap<String, u64>) {
    let mut c = BTreeMap::new();
    let out = s.scrub(text, &mut c).unwrap_or_else(|| text.to_string());
    (out, c)
}

#[test]
fn scrubs_each_kind_and_leaves_numbers() {
    let s = PiiScrubber::new().unwrap();
    let (out, c) = scrub(
        &s,
        "mail jane.doe@example.com, call +1 (415) 555-0134 or 415-555-0199, host 192.168.1.20, key sk-proj-abcdefghijklmnopqrstuvwx1234",
    );
    assert_eq!(
        out,
        "mail [EMAIL], call [PHONE] or [PHONE], host [IP], key [API_KEY]"
    );
    assert_eq!(c["phone"], 2);
    let mut c = BTreeMap::new();
    assert!(s
        .scrub(
            "What is 12345 * 6789? It is 83810205. Date 2023-04-09, v1.2.3",
            &mut c
        )
        .is_none());
    assert!(s.scrub("<|im_start|>system", &mut c).is_none());
}

/// Each case: input, expected output, kind counted.
#[test]
fn every_kind_a_reviewer_asked_for() {
    let s = PiiScrubber::new().unwrap();
    let k36 = "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8";
    let cases: Vec<(String, String, &str)> = vec![
        ("card 4111 1111 1111 1111 ok".into(), "card [CARD] ok".into(), "card"),
        ("mc 5555555555554444.".into(), "mc [CARD].".into(), "card"),
        ("amex 3782-822463-10005".into(), "amex [CARD]".into(), "card"),
        ("disc 6011111111111117".into(), "disc [CARD]".into(), "card"),
        ("iban DE89 3704 0044 0532 0130 00 end".into(), "iban [IBAN] end".into(), "iban"),
        ("iban GB82WEST12345698765432".into(), "iban [IBAN]".into(), "iban"),
        ("ssn 123-45-6789".into(), "ssn [SSN]".into(), "ssn"),
        ("uk +44 20 7946 0958".into(), "uk [PHONE]".into(), "phone"),
        ("fr +33 1 23 45 67 89".into(), "fr [PHONE]".into(), "phone"),
        ("jp +81-3-1234-5678".into(), "jp [PHONE]".into(), "phone"),
        ("in +91 98765 43210".into(), "in [PHONE]".into(), "phone"),
        ("de 030 1234567".into(), "de [PHONE]".into(), "phone"),
        ("uk 07700 900123".into(), "uk [PHONE]".into(), "phone"),
        ("fr 01 23 45 67 89".into(), "fr [PHONE]".into(), "phone"),
        ("v6 2001:db8::8a2e:370:7334 up".into(), "v6 [IP] up".into(), "ip"),
        ("v6 fe80::1ff:fe23:4567:890a.".into(), "v6 [IP].".into(), "ip"),
        ("v6 2001:0db8:0000:0000:0000:ff00:0042:8329".into(), "v6 [IP]".into(), "ip"),
        ("mail josé.garcía@correo.es".into(), "mail [EMAIL]".into(), "email"),
        ("mail 用户@例子.广告 now".into(), "mail [EMAIL] now".into(), "email"),
        (
            "k -----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA0Z3VS5JJcds3\n-----END RSA PRIVATE KEY----- done".into(),
            "k [PRIVATE_KEY] done".into(),
            "private_key",
        ),
        (
            "cut -----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA".into(),
            "cut [PRIVATE_KEY]".into(),
            "private_key",
        ),
        (
            "Authorization: Bearer abcdef0123456789abcdef".into(),
            "Authorization: Bearer [AUTH_TOKEN]".into(),
            "auth_token",
        ),
        (
            "Authorization: Basic dXNlcjpwYXNzd29yZA==".into(),
            "Authorization: Basic [AUTH_TOKEN]".into(),
            "auth_token",
        ),
        ("aws AKIAIOSFODNN7EXAMPLE".into(), "aws [API_KEY]".into(), "api_key"),
        (
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            "aws_secret_access_key = [API_KEY]".into(),
            "api_key",
        ),
        (
            format!("AccountKey={}==;End", "A".repeat(86)),
            "AccountKey=[API_KEY];End".into(),
            "api_key",
        ),
        ("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc".into(), "stripe [API_KEY]".into(), "api_key"),
        (format!("npm npm_{k36}"), "npm [API_KEY]".into(), "api_key"),
        (format!("gh ghp_{k36}"), "gh [API_KEY]".into(), "api_key"),
        (
            "slack xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx".into(),
            "slack [API_KEY]".into(),
            "api_key",
        ),
        (format!("g AIza{}", &k36[..35]), "g [API_KEY]".into(), "api_key"),
        (
            "oa sk-proj-T3BlbkFJabcdefghijklmnop1234".into(),
            "oa [API_KEY]".into(),
            "api_key",
        ),
        (
            "an sk-ant-api03-abcdefghijklmnopqrstuvwxyz012345-AAAA".into(),
            "an [API_KEY]".into(),
            "api_key",
        ),
        (format!("hf hf_{}", &k36[..34]), "hf [API_KEY]".into(), "api_key"),
        (
            r#"db(password="hunter2!x")"#.into(),
            r#"db(password="[PASSWORD]")"#.into(),
            "password",
        ),
    ];
    for (input, want, kind) in cases {
        let mut c = BTreeMap::new();
        let got = s.scrub(&input, &mut c);
        assert_eq!(got.as_deref(), Some(want.as_str()), "input: {input}");
        assert_eq!(c.get(kind), Some(&1), "kind {kind} for {input}: {c:?}");
        assert_eq!(
            c.values().sum::<u64>(),
            1,
            "one replacement for {input}: {c:?}"
        );
    }
}

#[test]
fn code_math_and_prose_stay_untouched() {
    let s = PiiScrubber::new().unwrap();
    for text in [
        "use std::io::Result; let x = a::b::c(); Foo::bar();",
        "card-like but not Luhn: 4111 1111 1111 1112",
        "IBAN with a bad check digit: GB82 WEST 1234 5698 7654 33",
        "never issued: 666-12-3456 and 000-12-3456 and 900-12-3456",
        "at 12:30:45 the MAC 00:1A:2B:3C:4D:5E and ::1",
        "basic knowledge; the bearer responsibilities; a Basic idea",
        "dates 2023-04-09 and 01-02-2023, order 1234567890123, pi 3.14159265358979",
        "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END PUBLIC KEY-----",
        "password = os.environ['PW'] if password == '' else password",
        "x + 12 = 30, 1e-12, 0.5 0.25",
    ] {
        let mut c = BTreeMap::new();
        assert_eq!(s.scrub(text, &mut c), None, "{text} -> {c:?}");
    }
}

#[test]
fn user_patterns_run_first_and_bad_ones_are_named() {
    let user = [PiiPattern {
        name: "employee_id".into(),
        pattern: r"EMP-[0-9]{6}".into(),
    }];
    let s = PiiScrubber::with_patterns(&user).unwrap();
    let (out, c) = scrub(&s, "ask EMP-123456 at a@b.io");
    assert_eq!(out, "ask [EMPLOYEE_ID] at [EMAIL]");
    assert_eq!((c["employee_id"], c["email"]), (1, 1));
    for (name, pattern, needle) in [
        ("Bad Name", "x", "Bad Name"),
        ("ok", "(", "invalid regex"),
        ("empty", "a*", "empty string"),
    ] {
        let err = PiiScrubber::with_patterns(&[PiiPattern {
            name: name.into(),
            pattern: pattern.into(),
        }])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains(needle), "{name}: {err}");
    }
}
