//! The fields rules can name: their ECS path, type and cost.
//!
//! Contract: a rule naming a field outside this table fails to load. The
//! type decides which literals a comparison accepts; the cost lets the
//! compiler evaluate cheap fields (in the exec event) before those that need
//! a procfs walk (leaders, parent).

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
    ProcessPid => "process.pid", Long, Event;
    ProcessName => "process.name", Keyword, Event;
    ProcessExecutable => "process.executable", Keyword, Event;
    ProcessArgs => "process.args", Keyword, Event;
    ProcessArgsCount => "process.args_count", Long, Event;
    ProcessCommandLine => "process.command_line", Keyword, Event;
    ProcessWorkingDirectory => "process.working_directory", Keyword, Event;
    ProcessTitle => "process.title", Keyword, Event;
    ProcessUserId => "process.user.id", Keyword, Event;
    ProcessUserName => "process.user.name", Keyword, Lookup;
    ProcessRealUserId => "process.real_user.id", Keyword, Event;
    ProcessRealUserName => "process.real_user.name", Keyword, Lookup;
    UserId => "user.id", Keyword, Event;
    UserName => "user.name", Keyword, Lookup;
    ProcessParentPid => "process.parent.pid", Long, Event;
    ProcessParentName => "process.parent.name", Keyword, Lookup;
    ProcessParentExecutable => "process.parent.executable", Keyword, Lookup;
    ProcessSessionLeaderPid => "process.session_leader.pid", Long, Lookup;
    ProcessSessionLeaderName => "process.session_leader.name", Keyword, Lookup;
    ProcessEntryLeaderPid => "process.entry_leader.pid", Long, Lookup;
    ProcessEntryLeaderName => "process.entry_leader.name", Keyword, Lookup;
    ProcessEntryLeaderType => "process.entry_leader.entry_meta.type", Keyword, Lookup;
    FilePath => "file.path", Keyword, Event;
    FileName => "file.name", Keyword, Event;
    TargetPid => "mapwatch.target.pid", Long, Event;
    TargetName => "mapwatch.target.name", Keyword, Lookup;
    TargetExecutable => "mapwatch.target.executable", Keyword, Lookup;
    ReadSelf => "mapwatch.read.self", Boolean, Event;
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
}
