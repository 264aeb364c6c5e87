//! Running an Argo CD health check (`health.lua`) under a Lua 5.1 interpreter, as Argo CD
//! runs it: the object as the global table `obj`, the script's returned table read back.

use std::path::{Path, PathBuf};

/// The Lua 5.1 interpreter: `ROLLGUARD_LUA`, else `lua5.1` on PATH.
pub fn lua_path() -> PathBuf {
    std::env::var_os("ROLLGUARD_LUA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("lua5.1"))
}

/// `value` as a Lua table constructor (null is nil: an absent field, as in Argo CD).
pub fn lua_literal(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(items) => format!("{{{}}}", items.iter().map(lua_literal).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn lua_string(s: &str) -> String {
    let mut out = String::from("\"");
    for b in s.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
    out.push('"');
    out
}

/// What the health check `script` says of `obj`: (status, message).
pub fn health(script: &Path, obj: &serde_json::Value) -> (String, String) {
    let program = format!(
        "obj = {}\nlocal check = assert(loadfile({}))\nlocal hs = check()\nio.write(tostring(hs.status), \"\\n\", tostring(hs.message or \"\"))\n",
        lua_literal(obj),
        lua_string(&script.display().to_string())
    );
    let out = std::process::Command::new(lua_path())
        .arg("-e")
        .arg(&program)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (Debian package lua5.1, installed by .ci/run): {e}",
                lua_path().display()
            )
        });
    assert!(
        out.status.success(),
        "{} failed on {}: {}",
        script.display(),
        obj,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, message) = text.split_once('\n').unwrap_or((&text, ""));
    (status.to_string(), message.to_string())
}
