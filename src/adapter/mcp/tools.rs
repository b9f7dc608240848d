//! `tools/call`: each tool is one HTTP route, reached through that route's
//! own code, so it checks, answers and fails as the route does. What the
//! route reads from its path and query string is read here from the
//! arguments; one that is missing, or cannot be what the route reads, is
//! refused before anything is asked, naming what the tool needs instead.

use serde_json::{json, Map, Value};
use worker::{Env, Response};

use crate::adapter::catalog;
use crate::adapter::config::Config;
use crate::adapter::gate_stub::gate;
use crate::adapter::http::{valid_id, ApiError};
use crate::adapter::trigger::execute;
use crate::core::listing::ListQuery;
use crate::core::segment::Command;

/// Why a tool was not called: the protocol's "invalid params", with a
/// message for the agent to correct its call by.
pub struct Refused(pub String);

const RUN_ID: &str = "the run's id, as execute_workflow and list_runs answer it";
const NAME: &str = "a stored workflow's name, as list_workflows answers it";
const GRAPH: &str = "a workflow graph, {nodes, edges}, as the input schema describes";

/// Calls `tool` with `arguments` as the route's own request would, and
/// answers the route's response (an error included: it is the tool's answer).
pub async fn call(
    tool: &str,
    arguments: Map<String, Value>,
    url: &worker::Url,
    config: &Config,
    env: &Env,
    owner: String,
) -> Result<Response, Refused> {
    let args = Arguments { tool, arguments };
    // A request about one run: its gate decides, as for the routes.
    let about_run: Option<fn(String, Option<String>) -> Command> = match tool {
        "get_run" => Some(|run_id, owner| Command::Read {
            run_id,
            owner,
            node: None,
        }),
        "cancel_run" => Some(|run_id, owner| Command::Cancel { run_id, owner }),
        "retry_run" => Some(|run_id, owner| Command::Retry { run_id, owner }),
        "redeliver_final_callback" => Some(|run_id, owner| Command::Redeliver { run_id, owner }),
        _ => None,
    };
    if let Some(command) = about_run {
        let run_id = args.run_id()?;
        let command = command(run_id.clone(), Some(owner));
        let answer = gate(env, &run_id, &command).await;
        return Ok(answer.unwrap_or_else(ApiError::into_response));
    }
    let answer = match tool {
        "execute_workflow" => start(&args, url, config, env, owner).await?,
        "list_runs" => {
            let query = args.query()?;
            match ListQuery::parse(query.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
                Ok(query) => catalog::list_runs(&query, env, &owner).await,
                Err(e) => Err(e.into()),
            }
        }
        "list_workflows" => catalog::list_workflows(&args.query()?, env, &owner).await,
        "get_workflow" => catalog::get_workflow(&args.text("name", NAME)?, env, &owner).await,
        "save_workflow" => {
            let name = args.text("name", NAME)?;
            let graph = args.required("graph", GRAPH)?;
            let body = json!({ "graph": graph });
            catalog::put_workflow(body, &name, config, env, &owner).await
        }
        "delete_workflow" => catalog::delete_workflow(&args.text("name", NAME)?, env, &owner).await,
        other => {
            return Err(Refused(format!(
                "no tool '{other}' (tools/list names them)"
            )))
        }
    };
    Ok(answer.unwrap_or_else(ApiError::into_response))
}

/// `execute_workflow`: `POST /execute` with a graph, or
/// `POST /workflows/{name}/execute` with a stored workflow's name.
async fn start(
    args: &Arguments<'_>,
    url: &worker::Url,
    config: &Config,
    env: &Env,
    owner: String,
) -> Result<Result<Response, ApiError>, Refused> {
    let mut body = args.arguments.clone();
    let present = |v: &Option<Value>| v.as_ref().is_some_and(|v| !v.is_null());
    let (graph, workflow) = (body.remove("graph"), body.remove("workflow"));
    Ok(match (present(&graph), workflow) {
        (false, None | Some(Value::Null)) => {
            return Err(args.missing(
                "\"graph\" (a workflow graph to run, {nodes, edges}) or \"workflow\" \
                 (the name of a stored workflow to run, as list_workflows answers it)",
            ))
        }
        (true, Some(w)) if !w.is_null() => {
            return Err(Refused(
                "execute_workflow takes \"graph\" or \"workflow\", not both: a stored \
                 workflow runs its own graph"
                    .into(),
            ))
        }
        (false, Some(Value::String(name))) => {
            catalog::execute_workflow(None, Value::Object(body), &name, url, config, env, owner)
                .await
        }
        (false, Some(_)) => {
            return Err(Refused(format!("\"workflow\" must be a string: {NAME}")));
        }
        (true, _) => {
            body.insert("graph".into(), graph.unwrap_or_default());
            execute(None, Value::Object(body), url, config, env, owner).await
        }
    })
}

/// A call's arguments, read as the route reads its path and query.
struct Arguments<'a> {
    tool: &'a str,
    arguments: Map<String, Value>,
}

impl Arguments<'_> {
    /// A refusal naming what the tool needs, and what it was given instead.
    fn missing(&self, needs: &str) -> Refused {
        let given: Vec<String> = self
            .arguments
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, _)| format!("\"{k}\""))
            .collect();
        let given = match given.is_empty() {
            true => String::new(),
            false => format!(" (it was given {})", given.join(", ")),
        };
        Refused(format!("{} needs {needs}{given}", self.tool))
    }

    fn required(&self, key: &str, what: &str) -> Result<Value, Refused> {
        match self.arguments.get(key) {
            None | Some(Value::Null) => Err(self.missing(&format!("\"{key}\": {what}"))),
            Some(value) => Ok(value.clone()),
        }
    }

    fn text(&self, key: &str, what: &str) -> Result<String, Refused> {
        match self.required(key, what)? {
            Value::String(text) => Ok(text),
            _ => Err(Refused(format!("\"{key}\" must be a string: {what}"))),
        }
    }

    /// Checked as the routes check it, before any gate is asked: a string
    /// that cannot be a run id costs nothing.
    fn run_id(&self) -> Result<String, Refused> {
        let id = self.text("run_id", RUN_ID)?;
        valid_id(&id).map_err(|_| {
            Refused("run_id is not a run id (letters, digits, '-' and '_', at most 64)".into())
        })?;
        Ok(id)
    }

    /// The arguments as the route's query string would carry them: a
    /// number as its digits, a list as its items joined by commas (as
    /// `?status=paused,failed`), so the route's own parsing checks them.
    fn query(&self) -> Result<Vec<(String, String)>, Refused> {
        let scalar = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        };
        let mut pairs = Vec::new();
        for (key, value) in &self.arguments {
            let text = match value {
                Value::Null => continue,
                Value::Array(items) => items.iter().map(scalar).collect::<Option<Vec<_>>>(),
                other => scalar(other).map(|s| vec![s]),
            };
            let Some(text) = text else {
                return Err(Refused(format!(
                    "\"{key}\" must be a string, a number or a list of them"
                )));
            };
            pairs.push((key.clone(), text.join(",")));
        }
        Ok(pairs)
    }
}
