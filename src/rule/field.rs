//! The fields rules can name: their ECS path, type and cost.
//!
//! Contract: [`Named::lookup`] resolves a path to a field mapwatch fills
//! (this table), to an ECS field mapwatch never fills (from ECS's own list,
//! `ecs_fields.txt`: its comparisons are decided as on a missing field), or
//! to nothing (a rule naming it fails to load). The type decides which
//! literals a comparison accepts; the cost lets the compiler evaluate cheap
//! fields (in the exec event) before those that need a procfs walk
//! (leaders, parent).

pub use crate::process::relative::Relation;

/// The ECS type of a field, as far as comparisons care.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Keyword,
    Long,
    Boolean,
}

/// How much it costs to read a field.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Cost {
    /// In the exec event itself.
    Event,
    /// Needs procfs or the process table (parent, leaders, user names).
    Lookup,
}

macro_rules! fields {
    ($($variant:ident => $path:literal, $kind:ident, $cost:ident;)*) => {
        /// A field a rule can name.
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
        pub enum Field {
            $($variant,)*
        }

        impl Field {
            pub const ALL: &'static [Field] = &[$(Field::$variant,)*];

            pub fn path(self) -> &'static str {
                match self {
                    $(Field::$variant => $path,)*
                }
            }

            pub fn kind(self) -> Kind {
                match self {
                    $(Field::$variant => Kind::$kind,)*
                }
            }

            pub fn cost(self) -> Cost {
                match self {
                    $(Field::$variant => Cost::$cost,)*
                }
            }

            pub fn from_path(path: &str) -> Option<Field> {
                match path {
                    $($path => Some(Field::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

fields! {
    HostOsType => "host.os.type", Keyword, Event;
    HostName => "host.name", Keyword, Event;
    EventKind => "event.kind", Keyword, Event;
    EventCategory => "event.category", Keyword, Event;
    EventType => "event.type", Keyword, Event;
    EventAction => "event.action", Keyword, Event;
    EventOutcome => "event.outcome", Keyword, Event;
    ProcessPid => "process.pid", Long, Event;
    ProcessName => "process.name", Keyword, Event;
    ProcessExecutable => "process.executable", Keyword, Event;
    ProcessArgs => "process.args", Keyword, Event;
    ProcessArgsCount => "process.args_count", Long, Event;
    ProcessCommandLine => "process.command_line", Keyword, Event;
    ProcessWorkingDirectory => "process.working_directory", Keyword, Event;
    ProcessTitle => "process.title", Keyword, Event;
    ProcessInteractive => "process.interactive", Boolean, Event;
    ProcessEnvVars => "process.env_vars", Keyword, Lookup;
    ProcessUserId => "process.user.id", Keyword, Event;
    ProcessUserName => "process.user.name", Keyword, Lookup;
    ProcessRealUserId => "process.real_user.id", Keyword, Event;
    ProcessRealUserName => "process.real_user.name", Keyword, Lookup;
    ProcessSavedUserId => "process.saved_user.id", Keyword, Event;
    ProcessGroupId => "process.group.id", Keyword, Event;
    ProcessGroupName => "process.group.name", Keyword, Lookup;
    ProcessRealGroupId => "process.real_group.id", Keyword, Event;
    ProcessRealGroupName => "process.real_group.name", Keyword, Lookup;
    ProcessSavedGroupId => "process.saved_group.id", Keyword, Event;
    UserId => "user.id", Keyword, Event;
    UserName => "user.name", Keyword, Lookup;
    UserRealId => "user.Ext.real.id", Keyword, Event;
    UserRealName => "user.Ext.real.name", Keyword, Lookup;
    GroupId => "group.id", Keyword, Event;
    GroupName => "group.name", Keyword, Lookup;
    GroupRealId => "group.Ext.real.id", Keyword, Event;
    GroupRealName => "group.Ext.real.name", Keyword, Lookup;
    ProcessPreviousExecutable => "process.previous.executable", Keyword, Lookup;
    ProcessPreviousArgs => "process.previous.args", Keyword, Lookup;
    ProcessParentPid => "process.parent.pid", Long, Event;
    ProcessParentName => "process.parent.name", Keyword, Lookup;
    ProcessParentExecutable => "process.parent.executable", Keyword, Lookup;
    ProcessParentArgs => "process.parent.args", Keyword, Lookup;
    ProcessParentArgsCount => "process.parent.args_count", Long, Lookup;
    ProcessParentCommandLine => "process.parent.command_line", Keyword, Lookup;
    ProcessParentWorkingDirectory => "process.parent.working_directory", Keyword, Lookup;
    ProcessParentInteractive => "process.parent.interactive", Boolean, Lookup;
    ProcessParentUserId => "process.parent.user.id", Keyword, Lookup;
    ProcessParentRealUserId => "process.parent.real_user.id", Keyword, Lookup;
    ProcessParentGroupId => "process.parent.group.id", Keyword, Lookup;
    ProcessParentRealGroupId => "process.parent.real_group.id", Keyword, Lookup;
    ProcessSessionLeaderPid => "process.session_leader.pid", Long, Lookup;
    ProcessSessionLeaderName => "process.session_leader.name", Keyword, Lookup;
    ProcessSessionLeaderExecutable => "process.session_leader.executable", Keyword, Lookup;
    ProcessSessionLeaderArgs => "process.session_leader.args", Keyword, Lookup;
    ProcessSessionLeaderArgsCount => "process.session_leader.args_count", Long, Lookup;
    ProcessSessionLeaderUserId => "process.session_leader.user.id", Keyword, Lookup;
    ProcessEntryLeaderPid => "process.entry_leader.pid", Long, Lookup;
    ProcessEntryLeaderName => "process.entry_leader.name", Keyword, Lookup;
    ProcessEntryLeaderType => "process.entry_leader.entry_meta.type", Keyword, Lookup;
    ProcessEntryLeaderExecutable => "process.entry_leader.executable", Keyword, Lookup;
    ProcessEntryLeaderArgs => "process.entry_leader.args", Keyword, Lookup;
    ProcessEntryLeaderArgsCount => "process.entry_leader.args_count", Long, Lookup;
    ProcessEntryLeaderWorkingDirectory => "process.entry_leader.working_directory", Keyword, Lookup;
    ProcessEntryLeaderUserId => "process.entry_leader.user.id", Keyword, Lookup;
    ProcessGroupLeaderPid => "process.group_leader.pid", Long, Lookup;
    ProcessGroupLeaderName => "process.group_leader.name", Keyword, Lookup;
    ProcessGroupLeaderExecutable => "process.group_leader.executable", Keyword, Lookup;
    ProcessGroupLeaderArgs => "process.group_leader.args", Keyword, Lookup;
    ProcessGroupLeaderArgsCount => "process.group_leader.args_count", Long, Lookup;
    ProcessGroupLeaderUserId => "process.group_leader.user.id", Keyword, Lookup;
    FilePath => "file.path", Keyword, Event;
    FileName => "file.name", Keyword, Event;
    TargetPid => "mapwatch.target.pid", Long, Event;
    TargetName => "mapwatch.target.name", Keyword, Lookup;
    TargetExecutable => "mapwatch.target.executable", Keyword, Lookup;
    ReadSelf => "mapwatch.read.self", Boolean, Event;
    TargetSelf => "mapwatch.target.self", Boolean, Event;
    PtraceRequest => "mapwatch.ptrace.request", Keyword, Event;
}

/// The ECS fields, one `path type` line each.
const ECS_FIELDS: &str = include_str!("ecs_fields.txt");

/// What a field path in a rule names.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Named {
    Filled(Field),
    /// An ECS field mapwatch's events never have (`None`: a type that
    /// compares with no literal kind here, such as a date or an address).
    NeverFilled(Option<Kind>),
}

impl Named {
    pub fn lookup(path: &str) -> Option<Named> {
        if let Some(field) = Field::from_path(path) {
            return Some(Named::Filled(field));
        }
        ECS_FIELDS
            .lines()
            .filter(|line| !line.starts_with('#'))
            .find_map(|line| {
                let (name, kind) = line.split_once(' ')?;
                (name == path).then_some({
                    Named::NeverFilled(match kind {
                        "keyword" => Some(Kind::Keyword),
                        "number" => Some(Kind::Long),
                        "boolean" => Some(Kind::Boolean),
                        _ => None,
                    })
                })
            })
    }
}

/// What rules can ask of a related process, beyond its pid and name.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fact {
    Executable,
    Args,
    ArgsCount,
    CommandLine,
    WorkingDirectory,
    Interactive,
    UserId,
    RealUserId,
    GroupId,
    RealGroupId,
}

impl Field {
    /// Whether every event has at most one value of it (what a sequence
    /// can join on).
    pub fn is_single_valued(self) -> bool {
        !matches!(
            self,
            Field::ProcessArgs
                | Field::ProcessEnvVars
                | Field::ProcessPreviousArgs
                | Field::ProcessParentArgs
                | Field::ProcessSessionLeaderArgs
                | Field::ProcessEntryLeaderArgs
                | Field::ProcessGroupLeaderArgs
                | Field::EventType
                | Field::EventCategory
        )
    }

    /// For a fact of a related process: which process, which fact.
    pub fn of_relative(self) -> Option<(Relation, Fact)> {
        use Fact::*;
        use Relation::*;
        Some(match self {
            Field::ProcessParentArgs => (Parent, Args),
            Field::ProcessParentArgsCount => (Parent, ArgsCount),
            Field::ProcessParentCommandLine => (Parent, CommandLine),
            Field::ProcessParentWorkingDirectory => (Parent, WorkingDirectory),
            Field::ProcessParentInteractive => (Parent, Interactive),
            Field::ProcessParentUserId => (Parent, UserId),
            Field::ProcessParentRealUserId => (Parent, RealUserId),
            Field::ProcessParentGroupId => (Parent, GroupId),
            Field::ProcessParentRealGroupId => (Parent, RealGroupId),
            Field::ProcessSessionLeaderExecutable => (SessionLeader, Executable),
            Field::ProcessSessionLeaderArgs => (SessionLeader, Args),
            Field::ProcessSessionLeaderArgsCount => (SessionLeader, ArgsCount),
            Field::ProcessSessionLeaderUserId => (SessionLeader, UserId),
            Field::ProcessEntryLeaderExecutable => (EntryLeader, Executable),
            Field::ProcessEntryLeaderArgs => (EntryLeader, Args),
            Field::ProcessEntryLeaderArgsCount => (EntryLeader, ArgsCount),
            Field::ProcessEntryLeaderWorkingDirectory => (EntryLeader, WorkingDirectory),
            Field::ProcessEntryLeaderUserId => (EntryLeader, UserId),
            Field::ProcessGroupLeaderExecutable => (GroupLeader, Executable),
            Field::ProcessGroupLeaderArgs => (GroupLeader, Args),
            Field::ProcessGroupLeaderArgsCount => (GroupLeader, ArgsCount),
            Field::ProcessGroupLeaderUserId => (GroupLeader, UserId),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip() {
        for field in Field::ALL {
            assert_eq!(Field::from_path(field.path()), Some(*field));
        }
        assert_eq!(Field::from_path("process.nam"), None);
    }

    #[test]
    fn ecs_fields_mapwatch_never_fills_are_known() {
        assert_eq!(
            Named::lookup("process.parent.code_signature.trusted"),
            Some(Named::NeverFilled(Some(Kind::Boolean)))
        );
        assert_eq!(
            Named::lookup("process.args"),
            Some(Named::Filled(Field::ProcessArgs))
        );
        assert_eq!(Named::lookup("process.parent.agrs"), None);
    }

    #[test]
    fn every_filled_field_is_an_ecs_field_or_mapwatchs_own() {
        for field in Field::ALL {
            let path = field.path();
            let in_ecs = ECS_FIELDS
                .lines()
                .any(|l| l.split_once(' ').is_some_and(|(name, _)| name == path));
            assert!(
                in_ecs || path.starts_with("mapwatch.") || path.contains(".Ext."),
                "{path} is neither ECS nor mapwatch's"
            );
        }
    }
}
