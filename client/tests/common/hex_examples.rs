//! Reading the worked hex examples of `protocol.md`, shared by the test that
//! checks them (`tests/protocol_examples.rs`) and the fuzz crate, which seeds
//! its corpus with them (`fuzz/src/seeds.rs`).

/// A named hex example of `protocol.md`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    /// The name on its `<!-- example: NAME -->` line.
    pub name: String,
    /// The frame's bytes.
    pub bytes: Vec<u8>,
}

/// Reads the named hex blocks of a Markdown document, in order, or says
/// which line is wrong: a hex block without a name, a name without a hex
/// block right after it, a duplicate name or a token that is not one hex
/// byte would each let an example escape the checks.
pub fn examples(markdown: &str) -> Result<Vec<Example>, String> {
    let mut examples: Vec<Example> = Vec::new();
    let mut lines = markdown.lines().zip(1..);
    while let Some((line, n)) = lines.next() {
        let line = line.trim();
        if line == "```hex" {
            return Err(format!("line {n}: hex block without an example name"));
        }
        let Some(name) = line
            .strip_prefix("<!-- example:")
            .and_then(|rest| rest.strip_suffix("-->"))
        else {
            continue;
        };
        let name = name.trim().to_owned();
        if lines.next().map(|(l, _)| l.trim()) != Some("```hex") {
            return Err(format!("line {n}: example {name} has no hex block"));
        }
        let mut bytes = Vec::new();
        loop {
            let Some((body, m)) = lines.next() else {
                return Err(format!("example {name} is not closed"));
            };
            if body.trim() == "```" {
                break;
            }
            let data = body.split('#').next().unwrap_or_default();
            for token in data.split_whitespace() {
                match u8::from_str_radix(token, 16) {
                    Ok(byte) if token.len() == 2 => bytes.push(byte),
                    _ => return Err(format!("line {m}: {token:?} is not a hex byte")),
                }
            }
        }
        if examples.iter().any(|e| e.name == name) {
            return Err(format!("example {name} is named twice"));
        }
        examples.push(Example { name, bytes });
    }
    Ok(examples)
}
