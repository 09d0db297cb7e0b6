//! Subscription filters: Pub/Sub's attribute filter language.
//!
//! ```text
//! filter  := or
//! or      := and ("OR" and)*
//! and     := unary ("AND" unary)*
//! unary   := ("NOT" | "-") unary | primary
//! primary := "(" filter ")"
//!          | "attributes." key ("=" | "!=") string
//!          | "attributes:" key
//!          | "hasPrefix(" "attributes." key "," string ")"
//! ```
//! As in Pub/Sub, `AND` and `OR` may not be mixed at one level without
//! parentheses, keys are identifiers or quoted strings, and a filter is at
//! most 256 bytes. A message that does not match is acknowledged for that
//! subscription at once: it is never stored for it.

use std::collections::HashMap;

/// The longest filter Pub/Sub accepts.
pub const MAX_FILTER_BYTES: usize = 256;

/// A parsed filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    HasPrefix(String, String),
    Not(Box<Filter>),
    And(Vec<Filter>),
    Or(Vec<Filter>),
}

impl Filter {
    /// Parses a filter; the error says what is wrong and where.
    pub fn parse(input: &str) -> Result<Filter, String> {
        if input.len() > MAX_FILTER_BYTES {
            return Err(format!(
                "a filter may be at most {MAX_FILTER_BYTES} bytes long"
            ));
        }
        let tokens = tokenize(input)?;
        let mut parser = Parser { tokens, pos: 0 };
        let filter = parser.or()?;
        match parser.peek() {
            None => Ok(filter),
            Some(token) => Err(format!("unexpected {token} at the end of the filter")),
        }
    }

    pub fn matches(&self, attributes: &HashMap<String, String>) -> bool {
        match self {
            Filter::Equals(k, v) => attributes.get(k) == Some(v),
            Filter::NotEquals(k, v) => attributes.get(k) != Some(v),
            Filter::Exists(k) => attributes.contains_key(k),
            Filter::HasPrefix(k, p) => attributes.get(k).is_some_and(|v| v.starts_with(p.as_str())),
            Filter::Not(f) => !f.matches(attributes),
            Filter::And(fs) => fs.iter().all(|f| f.matches(attributes)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches(attributes)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Str(String),
    LParen,
    RParen,
    Comma,
    Dot,
    Colon,
    Eq,
    NotEq,
    Minus,
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Token::Word(w) => write!(f, "`{w}`"),
            Token::Str(s) => write!(f, "string {s:?}"),
            Token::LParen => f.write_str("`(`"),
            Token::RParen => f.write_str("`)`"),
            Token::Comma => f.write_str("`,`"),
            Token::Dot => f.write_str("`.`"),
            Token::Colon => f.write_str("`:`"),
            Token::Eq => f.write_str("`=`"),
            Token::NotEq => f.write_str("`!=`"),
            Token::Minus => f.write_str("`-`"),
        }
    }
}

fn tokenize(input: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let token = match c {
            c if c.is_whitespace() => continue,
            '(' => Token::LParen,
            ')' => Token::RParen,
            ',' => Token::Comma,
            '.' => Token::Dot,
            ':' => Token::Colon,
            '=' => Token::Eq,
            '-' => Token::Minus,
            '!' if chars.peek().map(|(_, c)| *c) == Some('=') => {
                chars.next();
                Token::NotEq
            }
            '"' | '\'' => {
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some((_, q)) if q == c => break,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, escaped)) => value.push(escaped),
                            None => return Err("the filter ends inside a string".into()),
                        },
                        Some((_, other)) => value.push(other),
                        None => return Err(format!("unterminated string starting at byte {i}")),
                    }
                }
                Token::Str(value)
            }
            c if c.is_ascii_alphanumeric() || c == '_' => {
                let mut word = c.to_string();
                while let Some((_, next)) = chars.peek().copied() {
                    if next.is_ascii_alphanumeric() || next == '_' {
                        word.push(next);
                        chars.next();
                    } else {
                        break;
                    }
                }
                Token::Word(word)
            }
            other => return Err(format!("unexpected character {other:?} at byte {i}")),
        };
        tokens.push(token);
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        token
    }

    fn expect(&mut self, want: Token) -> Result<(), String> {
        match self.next() {
            Some(token) if token == want => Ok(()),
            Some(token) => Err(format!("expected {want}, found {token}")),
            None => Err(format!("expected {want}, found the end of the filter")),
        }
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w == word)
    }

    fn or(&mut self) -> Result<Filter, String> {
        let first = self.and()?;
        if !self.keyword("OR") {
            return Ok(first);
        }
        if matches!(first, Filter::And(_)) {
            return Err("AND and OR need parentheses to be combined".into());
        }
        let mut terms = vec![first];
        while self.keyword("OR") {
            self.next();
            let term = self.and()?;
            if matches!(term, Filter::And(_)) {
                return Err("AND and OR need parentheses to be combined".into());
            }
            terms.push(term);
        }
        Ok(Filter::Or(terms))
    }

    fn and(&mut self) -> Result<Filter, String> {
        let first = self.unary()?;
        if !self.keyword("AND") {
            return Ok(first);
        }
        let mut terms = vec![first];
        while self.keyword("AND") {
            self.next();
            terms.push(self.unary()?);
        }
        Ok(Filter::And(terms))
    }

    fn unary(&mut self) -> Result<Filter, String> {
        if self.keyword("NOT") || self.peek() == Some(&Token::Minus) {
            self.next();
            return Ok(Filter::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn key(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::Word(w)) => Ok(w),
            Some(Token::Str(s)) if !s.is_empty() => Ok(s),
            Some(token) => Err(format!("expected an attribute name, found {token}")),
            None => Err("expected an attribute name, found the end of the filter".into()),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::Str(s)) => Ok(s),
            Some(token) => Err(format!("expected a quoted string, found {token}")),
            None => Err("expected a quoted string, found the end of the filter".into()),
        }
    }

    fn attributes(&mut self) -> Result<(), String> {
        match self.next() {
            Some(Token::Word(w)) if w == "attributes" => Ok(()),
            Some(token) => Err(format!("expected `attributes`, found {token}")),
            None => Err("expected `attributes`, found the end of the filter".into()),
        }
    }

    fn primary(&mut self) -> Result<Filter, String> {
        match self.peek() {
            Some(Token::LParen) => {
                self.next();
                let inner = self.or()?;
                self.expect(Token::RParen)?;
                Ok(inner)
            }
            Some(Token::Word(w)) if w == "hasPrefix" => {
                self.next();
                self.expect(Token::LParen)?;
                self.attributes()?;
                self.expect(Token::Dot)?;
                let key = self.key()?;
                self.expect(Token::Comma)?;
                let prefix = self.string()?;
                self.expect(Token::RParen)?;
                Ok(Filter::HasPrefix(key, prefix))
            }
            _ => {
                self.attributes()?;
                match self.next() {
                    Some(Token::Colon) => Ok(Filter::Exists(self.key()?)),
                    Some(Token::Dot) => {
                        let key = self.key()?;
                        match self.next() {
                            Some(Token::Eq) => Ok(Filter::Equals(key, self.string()?)),
                            Some(Token::NotEq) => Ok(Filter::NotEquals(key, self.string()?)),
                            Some(token) => Err(format!("expected `=` or `!=`, found {token}")),
                            None => Err("expected `=` or `!=`, found the end of the filter".into()),
                        }
                    }
                    Some(token) => Err(format!(
                        "expected `.` or `:` after `attributes`, found {token}"
                    )),
                    None => Err("expected `.` or `:` after `attributes`".into()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn matching_table() {
        let m = attrs(&[("channel", "email"), ("lab", "idexx-north"), ("urgent", "")]);
        let cases = [
            (r#"attributes.channel = "email""#, true),
            (r#"attributes.channel = "sms""#, false),
            (r#"attributes.channel != "sms""#, true),
            (r#"attributes.missing != "x""#, true),
            ("attributes:urgent", true),
            ("attributes:missing", false),
            (r#"hasPrefix(attributes.lab, "idexx")"#, true),
            (r#"hasPrefix(attributes.lab, "antech")"#, false),
            (r#"hasPrefix(attributes.missing, "")"#, false),
            (r#"NOT attributes:missing"#, true),
            (r#"-attributes:urgent"#, false),
            (
                r#"attributes:urgent AND attributes.channel = "email""#,
                true,
            ),
            (
                r#"attributes:missing OR attributes.channel = "email""#,
                true,
            ),
            (
                r#"(attributes:missing OR attributes:urgent) AND NOT attributes.lab = "x""#,
                true,
            ),
            (r#"attributes."channel" = 'email'"#, true),
        ];
        for (filter, want) in cases {
            let parsed = Filter::parse(filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
            assert_eq!(parsed.matches(&m), want, "{filter}");
        }
    }

    #[test]
    fn malformed_filters_say_what_is_wrong() {
        let cases = [
            ("", "expected `attributes`"),
            ("attributes", "after `attributes`"),
            ("attributes.k", "`=` or `!=`"),
            ("attributes.k = v", "quoted string"),
            (r#"attributes.k = "v"#, "unterminated"),
            (
                r#"attributes:a AND attributes:b OR attributes:c"#,
                "parentheses",
            ),
            (
                r#"attributes:a OR attributes:b AND attributes:c"#,
                "parentheses",
            ),
            ("(attributes:a", "expected `)`"),
            ("attributes:a)", "unexpected `)`"),
            ("data = \"x\"", "expected `attributes`"),
            ("attributes:a ~", "unexpected character"),
        ];
        for (filter, want) in cases {
            let err = Filter::parse(filter).unwrap_err();
            assert!(err.contains(want), "{filter}: {err}");
        }
        assert!(
            Filter::parse(&format!("attributes:{}", "k".repeat(250)))
                .unwrap_err()
                .contains("256")
        );
    }
}
