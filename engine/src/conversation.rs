//! Conversations (DESIGN.md §2 "Conversations"): an optional system
//! message, then user turns each answered by an assistant turn, with tool
//! calls and observations in between as context.
//!
//! A [`Conversation`] is checked when it is made, so every later step can
//! rely on its shape: the first message is the system message or a user
//! message; every user message is answered by an assistant message, after
//! any number of context messages; an assistant message is followed by a
//! user message or ends the conversation. Each assistant message that
//! answers a user message is a scored [`Turn`]; context messages are only
//! ever rendered, never scored.

use std::fmt;

use crate::score::{Pair, PairScore};

/// Messages a conversation may hold. Long enough for any real chat log
/// (ShareGPT dumps and WildChat stay in the tens); a record past it is
/// more likely a concatenated file than a conversation, and each turn's
/// history is rendered again, so the cost grows with its square.
pub const MAX_MESSAGES: usize = 1024;

/// Who speaks a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    System,
    User,
    Assistant,
    /// An assistant message that calls a tool (ShareGPT `function_call`,
    /// OpenAI `tool_calls`): context, never scored.
    ToolCall,
    /// A tool's answer (ShareGPT `observation`, OpenAI `tool`/`function`):
    /// context, never scored.
    Tool,
}

impl Role {
    /// The role the chat template sees. A tool call is the assistant
    /// speaking, so templates render it as an assistant message; a tool's
    /// answer is `tool`, the role OpenAI and the templates that know tools
    /// use (a template that knows none raises, and the error says so).
    pub fn template_role(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant | Role::ToolCall => "assistant",
            Role::Tool => "tool",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
        }
    }

    /// `(role, content)` as [`crate::template::ChatTemplate::render`] takes it.
    pub fn rendered(&self) -> (&str, &str) {
        (self.role.template_role(), &self.content)
    }
}

/// Why a list of messages is not a conversation: the message (0-based
/// index) and the turn (1-based, counting assistant turns; the turn the
/// message belongs to or would have opened) where it went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConversationError {
    pub message: usize,
    pub turn: usize,
    pub reason: String,
}

impl fmt::Display for ConversationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "message {} (turn {}): {}",
            self.message, self.turn, self.reason
        )
    }
}

/// A checked conversation with at least one scored turn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation {
    messages: Vec<Message>,
    /// `(user, assistant)` message indices of each scored turn, in order.
    turns: Vec<(usize, usize)>,
}

/// One scored exchange, borrowed from its conversation: `user` answered by
/// `assistant` after `history`, with `context` (tool calls, observations)
/// between them. A pair is the turn with no history and no context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Turn<'a> {
    /// The system message and every earlier exchange, in order.
    pub history: &'a [Message],
    pub user: &'a str,
    /// Messages after `user` and before `assistant`: the forward views see
    /// them (the assistant answered with them in front), the reverse views
    /// do not (their target, `user`, came before them).
    pub context: &'a [Message],
    pub assistant: &'a str,
}

impl<'a> Turn<'a> {
    /// The pair as a turn: exactly the pair's views (DESIGN.md §2).
    pub fn of_pair(pair: &'a Pair) -> Turn<'a> {
        Turn {
            history: &[],
            user: &pair.instruction,
            context: &[],
            assistant: &pair.response,
        }
    }

    /// Exchanges in the history (each starts at a user message): what
    /// [`Turn::kept_history`] can drop.
    pub fn n_exchanges(&self) -> usize {
        self.history.iter().filter(|m| m.role == Role::User).count()
    }

    /// The history with its `dropped` oldest exchanges left out, the system
    /// message kept (DESIGN.md §2: whole turns, oldest first). A dropped
    /// exchange goes with the context messages inside it.
    pub fn kept_history(&self, dropped: usize) -> Vec<(&'a str, &'a str)> {
        let mut out = Vec::with_capacity(self.history.len());
        let mut seen = 0;
        for m in self.history {
            if m.role == Role::User {
                seen += 1;
            }
            if m.role == Role::System || seen > dropped {
                out.push(m.rendered());
            }
        }
        out
    }
}

impl Conversation {
    /// Checks the shape (see the module documentation): roles in order,
    /// no empty content, at most [`MAX_MESSAGES`] messages, at least one
    /// assistant turn.
    pub fn new(messages: Vec<Message>) -> Result<Conversation, ConversationError> {
        let mut turns = Vec::new();
        let err = |message: usize, turns: &Vec<(usize, usize)>, reason: String| {
            Err(ConversationError {
                message,
                turn: turns.len() + 1,
                reason,
            })
        };
        if messages.len() > MAX_MESSAGES {
            return err(
                MAX_MESSAGES,
                &turns,
                format!(
                    "{} messages, over the limit of {MAX_MESSAGES} for one conversation",
                    messages.len()
                ),
            );
        }
        // The user message waiting for its answer.
        let mut open: Option<usize> = None;
        for (i, m) in messages.iter().enumerate() {
            if m.content.trim().is_empty() {
                return err(
                    i,
                    &turns,
                    format!("empty content in {} message", name(m.role)),
                );
            }
            match (m.role, open) {
                (Role::System, _) if i == 0 => {}
                (Role::System, _) => {
                    return err(
                        i,
                        &turns,
                        "a system message after the first message (roles out of order)".into(),
                    )
                }
                (Role::User, None) => open = Some(i),
                (Role::User, Some(u)) => {
                    return err(
                        i,
                        &turns,
                        format!(
                            "a user message where an assistant message is expected: message {u} is not answered (roles out of order)"
                        ),
                    )
                }
                (Role::Assistant, Some(u)) => {
                    turns.push((u, i));
                    open = None;
                }
                (Role::ToolCall | Role::Tool, Some(_)) => {}
                (role, None) => {
                    return err(
                        i,
                        &turns,
                        format!(
                            "{} message where a user message is expected (roles out of order)",
                            name(role)
                        ),
                    )
                }
            }
        }
        if let Some(u) = open {
            return err(
                u,
                &turns,
                "the last user message has no assistant answer".into(),
            );
        }
        if turns.is_empty() {
            return err(0, &turns, "no assistant turn".into());
        }
        Ok(Conversation { messages, turns })
    }

    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// Scored turns (assistant messages that answer a user message).
    pub fn n_turns(&self) -> usize {
        self.turns.len()
    }

    /// The scored turns, in order (turn k of the output is the k-th, from 1).
    pub fn turns(&self) -> impl Iterator<Item = Turn<'_>> + '_ {
        self.turns.iter().map(|&(u, a)| Turn {
            history: &self.messages[..u],
            user: &self.messages[u].content,
            context: &self.messages[u + 1..a],
            assistant: &self.messages[a].content,
        })
    }
}

/// The conversation's score (DESIGN.md §3): its weakest turn, the one with
/// the lowest `alignment` (the first of equals; a NaN counts as lowest, so
/// a turn that could not be scored is never hidden behind a good one).
/// `None` for no turns.
pub fn weakest(turns: &[PairScore]) -> Option<&PairScore> {
    let key = |s: &PairScore| {
        if s.alignment.is_nan() {
            f64::NEG_INFINITY
        } else {
            s.alignment
        }
    };
    turns
        .iter()
        .reduce(|best, s| if key(s) < key(best) { s } else { best })
}

fn name(role: Role) -> &'static str {
    match role {
        Role::System => "a system",
        Role::User => "a user",
        Role::Assistant => "an assistant",
        Role::ToolCall => "a tool-call",
        Role::Tool => "a tool",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(roles: &[Role]) -> Result<Conversation, ConversationError> {
        Conversation::new(
            roles
                .iter()
                .enumerate()
                .map(|(i, &r)| Message::new(r, format!("m{i}")))
                .collect(),
        )
    }

    use Role::*;

    #[test]
    fn turns_carry_history_and_context() {
        let c = conv(&[System, User, Assistant, User, ToolCall, Tool, Assistant]).unwrap();
        let t: Vec<Turn> = c.turns().collect();
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].user, t[0].assistant), ("m1", "m2"));
        assert_eq!(t[0].history.len(), 1);
        assert!(t[0].context.is_empty());
        assert_eq!((t[1].user, t[1].assistant), ("m3", "m6"));
        assert_eq!(t[1].history.len(), 3);
        assert_eq!(t[1].context.len(), 2);
        assert_eq!(t[1].n_exchanges(), 1);
        assert_eq!(
            t[1].kept_history(0),
            [("system", "m0"), ("user", "m1"), ("assistant", "m2")]
        );
        assert_eq!(t[1].kept_history(1), [("system", "m0")]);
    }

    #[test]
    fn dropping_takes_whole_exchanges_with_their_context() {
        let c = conv(&[
            User, ToolCall, Tool, Assistant, User, Assistant, User, Assistant,
        ])
        .unwrap();
        let last = c.turns().last().unwrap();
        assert_eq!(last.n_exchanges(), 2);
        assert_eq!(last.kept_history(1), [("user", "m4"), ("assistant", "m5")]);
        assert!(last.kept_history(2).is_empty());
    }

    #[test]
    fn malformed_conversations_name_message_and_turn() {
        let e = |roles: &[Role]| conv(roles).unwrap_err();
        assert_eq!(
            e(&[User]),
            ConversationError {
                message: 0,
                turn: 1,
                reason: "the last user message has no assistant answer".into()
            }
        );
        assert_eq!(e(&[System]).reason, "no assistant turn");
        let x = e(&[User, Assistant, User, User, Assistant]);
        assert_eq!((x.message, x.turn), (3, 2));
        assert!(x.reason.contains("roles out of order"), "{}", x.reason);
        let x = e(&[User, Assistant, Assistant]);
        assert_eq!((x.message, x.turn), (2, 2));
        assert_eq!(
            x.reason,
            "an assistant message where a user message is expected (roles out of order)"
        );
        let x = e(&[User, Assistant, System, User, Assistant]);
        assert_eq!((x.message, x.turn), (2, 2));
        let x = e(&[Tool, User, Assistant]);
        assert_eq!(x.message, 0);
        let mut empty = vec![Message::new(User, "q"), Message::new(Assistant, " \n")];
        let x = Conversation::new(empty.clone()).unwrap_err();
        assert_eq!((x.message, x.turn), (1, 1));
        assert_eq!(x.reason, "empty content in an assistant message");
        empty[1].content = "a".into();
        assert!(Conversation::new(empty).is_ok());
        let long: Vec<Role> = (0..10_000)
            .map(|i| if i % 2 == 0 { User } else { Assistant })
            .collect();
        let x = e(&long);
        assert_eq!(x.message, MAX_MESSAGES);
        assert!(
            x.reason.starts_with("10000 messages, over the limit"),
            "{}",
            x.reason
        );
    }

    #[test]
    fn weakest_turn_is_the_lowest_alignment() {
        let s = |a: f64| {
            let mut p = crate::score::pair_score(
                &crate::score::ViewLogprobs {
                    fwd_cond: &[-1.0],
                    fwd_uncond: &[-2.0],
                    rev_cond: &[-1.0],
                    rev_uncond: &[-2.0],
                    response_pieces: &["a".into()],
                    n_end_of_turn: 0,
                },
                crate::score::Combine::Min,
                false,
            );
            p.alignment = a;
            p
        };
        let v = [s(0.5), s(-0.2), s(0.1), s(-0.2)];
        assert!(std::ptr::eq(weakest(&v).unwrap(), &v[1]));
        let v = [s(0.5), s(f64::NAN)];
        assert!(weakest(&v).unwrap().alignment.is_nan());
        assert!(weakest(&[]).is_none());
    }
}
