//! What an agent sees of an MCP server's tools: the `tools/list` answer is
//! cut down to the tools the agent may call, so that the model never plans
//! around a tool it cannot use. Listing grants nothing: every `tools/call`
//! is still judged on its own.

use crate::bundle::Bundle;
use crate::eval::{AgentRef, Decision};
use crate::reason::Reason;
use crate::types::{Approval, Mode, Verdict};

/// How one tool of a `tools/list` answer is shown to the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// The agent has a rule for it (its conditions may still refuse a
    /// call).
    Callable,
    /// Every rule the agent has for it asks for human approval: listed,
    /// and marked so.
    NeedsApproval,
    /// The agent may not call it, or the catalog does not know it.
    Hidden,
}

/// The `tools/list` request of one agent to one MCP server, whose answer
/// is to be filtered ([`Bundle::tools_list`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolsList {
    agent: AgentRef,
    tool: u16,
}

impl ToolsList {
    /// The MCP server's index in the bundle's tools.
    pub fn tool(&self) -> usize {
        usize::from(self.tool)
    }
}

impl Bundle {
    /// For a decision that let an MCP `tools/list` through: what filters
    /// its answer. `None` for any other request, for an agent in shadow
    /// mode (nothing is enforced for it) and for a server whose catalog
    /// entry sets `filter_tools_list: false`.
    pub fn tools_list(&self, d: &Decision<'_>) -> Option<ToolsList> {
        if !matches!(d.verdict, Verdict::Allow | Verdict::Sanitize) || d.mode != Mode::Enforce {
            return None;
        }
        if !matches!(
            d.reason,
            Reason::McpPlumbing {
                method: "tools/list"
            }
        ) {
            return None;
        }
        let name = d.tool?;
        let tool = self
            .model
            .tools
            .iter()
            .position(|t| t.name == name && t.mcp_path.is_some())?;
        if !self.model.tools.get(tool)?.filter_tools_list {
            return None;
        }
        Some(ToolsList {
            agent: d.caller?,
            tool: u16::try_from(tool).ok()?,
        })
    }

    /// How the tool called `name` (as the server lists it) is shown.
    pub fn listing(&self, list: ToolsList, name: &str) -> Listing {
        let tool = list.tool();
        let Some(agent) = self.agent(list.agent) else {
            return Listing::Hidden;
        };
        let Some(t) = self.model.tools.get(tool) else {
            return Listing::Hidden;
        };
        // `resources/read` and `prompts/get` may be actions too, but they
        // are methods, not tools a server lists.
        let Some(action) = t
            .actions
            .iter()
            .position(|a| a.name == name && !crate::mcp::MCP_GOVERNED.contains(&name))
        else {
            return Listing::Hidden;
        };
        match self.rules_for(agent, tool, action) {
            None | Some([]) => Listing::Hidden,
            Some(rules) if rules.iter().all(|r| r.approval == Approval::Always) => {
                Listing::NeedsApproval
            }
            Some(_) => Listing::Callable,
        }
    }
}
