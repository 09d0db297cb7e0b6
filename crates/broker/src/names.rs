//! Resource names, parsed once at the edge.
//!
//! Pub/Sub's rules for a topic or subscription id: 3 to 255 characters,
//! starting with a letter, made of letters, digits and `-_.~+%`, and not
//! starting with `goog`. Project ids are taken as given (any project is
//! accepted) but must be a single non-empty path segment.

use std::fmt;

use crate::error::BrokerError;

/// `projects/{project}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectName(String);

/// `projects/{project}/topics/{topic}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName {
    full: String,
    project_len: usize,
}

/// `projects/{project}/subscriptions/{subscription}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionName {
    full: String,
    project_len: usize,
}

/// The name a subscription reports once its topic has been deleted.
pub const DELETED_TOPIC: &str = "_deleted-topic_";

fn parse_project(project: &str, what: &str, input: &str) -> Result<(), BrokerError> {
    if project.is_empty() || project.contains('/') {
        return Err(BrokerError::invalid(format!(
            "Invalid {what} name \"{input}\": the project id must be a non-empty path segment"
        )));
    }
    Ok(())
}

/// Checks a topic or subscription id against Pub/Sub's naming rules.
pub fn validate_resource_id(id: &str, what: &str, input: &str) -> Result<(), BrokerError> {
    let bad = |why: &str| {
        Err(BrokerError::invalid(format!(
            "Invalid {what} name \"{input}\": {why}"
        )))
    };
    if id.len() < 3 || id.len() > 255 {
        return bad("the id must be 3 to 255 characters long");
    }
    if !id.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return bad("the id must start with a letter");
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.~+%".contains(*c)))
    {
        return bad(&format!(
            "the id may contain only letters, digits and -_.~+%, not {c:?}"
        ));
    }
    if id.to_ascii_lowercase().starts_with("goog") {
        return bad("the id must not start with \"goog\"");
    }
    Ok(())
}

fn parse_resource(
    input: &str,
    collection: &str,
    what: &str,
) -> Result<(String, usize), BrokerError> {
    let mut parts = input.split('/');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("projects"), Some(project), Some(c), Some(id), None) if c == collection => {
            parse_project(project, what, input)?;
            validate_resource_id(id, what, input)?;
            Ok((input.to_string(), "projects/".len() + project.len()))
        }
        _ => Err(BrokerError::invalid(format!(
            "Invalid {what} name \"{input}\": expected projects/{{project}}/{collection}/{{{what}}}"
        ))),
    }
}

impl ProjectName {
    pub fn parse(input: &str) -> Result<Self, BrokerError> {
        match input.strip_prefix("projects/") {
            Some(project) => {
                parse_project(project, "project", input)?;
                Ok(ProjectName(input.to_string()))
            }
            None => Err(BrokerError::invalid(format!(
                "Invalid project name \"{input}\": expected projects/{{project}}"
            ))),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The bare project id, without `projects/`.
    pub fn id(&self) -> &str {
        &self.0["projects/".len()..]
    }
}

impl TopicName {
    pub fn parse(input: &str) -> Result<Self, BrokerError> {
        let (full, project_len) = parse_resource(input, "topics", "topic")?;
        Ok(TopicName { full, project_len })
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// `projects/{project}`.
    pub fn project(&self) -> &str {
        &self.full[..self.project_len]
    }
}

impl SubscriptionName {
    pub fn parse(input: &str) -> Result<Self, BrokerError> {
        let (full, project_len) = parse_resource(input, "subscriptions", "subscription")?;
        Ok(SubscriptionName { full, project_len })
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// `projects/{project}`.
    pub fn project(&self) -> &str {
        &self.full[..self.project_len]
    }

    /// The bare project id.
    pub fn project_id(&self) -> &str {
        &self.full["projects/".len()..self.project_len]
    }

    /// The bare subscription id.
    pub fn id(&self) -> &str {
        &self.full[self.project_len + "/subscriptions/".len()..]
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Display for SubscriptionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names() {
        let t = TopicName::parse("projects/p-1/topics/new-lab-report").unwrap();
        assert_eq!(t.project(), "projects/p-1");
        let s = SubscriptionName::parse("projects/p/subscriptions/a.b~c+d%e_f").unwrap();
        assert_eq!(s.id(), "a.b~c+d%e_f");
        assert_eq!(s.project_id(), "p");
    }

    #[test]
    fn rejects_invalid_names_with_the_reason() {
        let cases = [
            ("projects/p/topics/t1", "3 to 255"),
            ("projects/p/topics/1abc", "start with a letter"),
            ("projects/p/topics/googly", "goog"),
            ("projects/p/topics/a b c", "may contain only"),
            ("projects/p/subscriptions/abc", "expected projects/"),
            ("projects//topics/abc", "project id"),
            ("topics/abc", "expected projects/"),
            ("projects/p/topics/abc/extra", "expected projects/"),
        ];
        for (input, why) in cases {
            let err = TopicName::parse(input).unwrap_err().to_string();
            assert!(err.contains(why), "{input}: {err}");
        }
        let long = format!("projects/p/topics/{}", "a".repeat(256));
        assert!(TopicName::parse(&long).is_err());
        let max = format!("projects/p/topics/{}", "a".repeat(255));
        assert!(TopicName::parse(&max).is_ok());
    }
}
