# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_outbox_global_optspecs
    string join \n config= v/verbose q/quiet log-format= h/help V/version
end

function __fish_outbox_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_outbox_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_outbox_using_subcommand
    set -l cmd (__fish_outbox_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c outbox -n "__fish_outbox_needs_command" -l config -d 'Config file (default: $OUTBOX_CONFIG, else ~/.config/outbox/config.toml on Linux)' -r -F
complete -c outbox -n "__fish_outbox_needs_command" -l log-format -d 'Log format on stderr: text (coloured only on a terminal, never with NO_COLOR) or json' -r -f -a "text\t''
json\t''"
complete -c outbox -n "__fish_outbox_needs_command" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG wins over it'
complete -c outbox -n "__fish_outbox_needs_command" -s q -l quiet -d 'Log only errors'
complete -c outbox -n "__fish_outbox_needs_command" -s h -l help -d 'Print help'
complete -c outbox -n "__fish_outbox_needs_command" -s V -l version -d 'Print version'
complete -c outbox -n "__fish_outbox_needs_command" -f -a "run" -d 'Run the agent: attach what is new, then watch until SIGINT/SIGTERM'
complete -c outbox -n "__fish_outbox_needs_command" -f -a "send" -d 'Attach one file now; prints the attachment id on stdout (does not touch the ledger)'
complete -c outbox -n "__fish_outbox_needs_command" -f -a "mail" -d 'Mail files now as one new message (draft, attach, send); prints the sent message\'s internetMessageId on stdout (does not touch the ledger). For scripts that used `mailx -a`'
complete -c outbox -n "__fish_outbox_needs_command" -f -a "status" -d 'Show the ledger: one row per file version, its state, progress and error'
complete -c outbox -n "__fish_outbox_needs_command" -f -a "retry" -d 'Put failed entries back in the queue: one by ID, or all with --failed. A message\'s ID retries it: a failed one goes on, an unconfirmed one is sent only if its draft is still a draft (--failed never takes an unconfirmed message). `--resend ID` mails a done file of a mailing folder again, on purpose, in a new message'
complete -c outbox -n "__fish_outbox_needs_command" -f -a "cancel" -d 'Stop an upload: delete its upload session and mark it canceled. A failed or rejected entry (its file deleted, say) is cleared: canceled, and no longer counted by `run --once`'
complete -c outbox -n "__fish_outbox_needs_command" -f -a "pause" -d 'Stop the running agent taking new files (one mapping, or all) without stopping it'
complete -c outbox -n "__fish_outbox_needs_command" -f -a "resume" -d 'Take new files again (one mapping, or all), and those dropped while paused'
complete -c outbox -n "__fish_outbox_needs_command" -f -a "login" -d 'Sign in interactively (device code); needs auth.method = "device_code"'
complete -c outbox -n "__fish_outbox_needs_command" -f -a "logout" -d 'Forget cached tokens'
complete -c outbox -n "__fish_outbox_needs_command" -f -a "whoami" -d 'Show the signed-in account (or the app, for client credentials)'
complete -c outbox -n "__fish_outbox_needs_command" -f -a "check" -d 'Validate config, folders, sign-in and every target item; exit 0 unless there is an error (warnings alone pass)'
complete -c outbox -n "__fish_outbox_needs_command" -f -a "verify" -d 'Read done attachments back from Graph and compare their SHA-256 with the ledger\'s'
complete -c outbox -n "__fish_outbox_needs_command" -f -a "items" -d 'List recent messages or events with their ids, to pick a mapping\'s target'
complete -c outbox -n "__fish_outbox_needs_command" -f -a "init" -d 'Write a commented starter config (never overwrites)'
complete -c outbox -n "__fish_outbox_needs_command" -f -a "service" -d 'Run at login: install, uninstall or show the service (systemd user unit, LaunchAgent, Scheduled Task)'
complete -c outbox -n "__fish_outbox_needs_command" -f -a "sandbox" -d 'A local Microsoft Graph stand-in, on loopback'
complete -c outbox -n "__fish_outbox_needs_command" -f -a "completions" -d 'Print the shell completion script: outbox completions bash > ~/.local/share/bash-completion/completions/outbox'
complete -c outbox -n "__fish_outbox_needs_command" -f -a "man" -d 'Show the manual page (the configuration, files and examples); off a terminal, print it (roff): outbox man > ~/.local/share/man/man1/outbox.1'
complete -c outbox -n "__fish_outbox_needs_command" -f -a "demo" -d 'Zero-setup tour against the built-in sandbox'
complete -c outbox -n "__fish_outbox_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c outbox -n "__fish_outbox_using_subcommand run" -l config -d 'Config file (default: $OUTBOX_CONFIG, else ~/.config/outbox/config.toml on Linux)' -r -F
complete -c outbox -n "__fish_outbox_using_subcommand run" -l log-format -d 'Log format on stderr: text (coloured only on a terminal, never with NO_COLOR) or json' -r -f -a "text\t''
json\t''"
complete -c outbox -n "__fish_outbox_using_subcommand run" -l once -d 'Scan, wait for files to settle, attach everything pending, then exit: 0 when all is done, 1 when anything failed or was rejected'
complete -c outbox -n "__fish_outbox_using_subcommand run" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG wins over it'
complete -c outbox -n "__fish_outbox_using_subcommand run" -s q -l quiet -d 'Log only errors'
complete -c outbox -n "__fish_outbox_using_subcommand run" -s h -l help -d 'Print help'
complete -c outbox -n "__fish_outbox_using_subcommand send" -l message -d 'Attach to this message (a draft): an id from `outbox items messages`' -r
complete -c outbox -n "__fish_outbox_using_subcommand send" -l event -d 'Attach to this calendar event: an id from `outbox items events`' -r
complete -c outbox -n "__fish_outbox_using_subcommand send" -l user -d 'Mailbox: `me` (default), a UPN or a user id' -r
complete -c outbox -n "__fish_outbox_using_subcommand send" -l name -d 'Attachment name (default: the file\'s name)' -r
complete -c outbox -n "__fish_outbox_using_subcommand send" -l if-exists -d 'When the item already has an attachment of this name with the same bytes: `skip` (print its id, send nothing) or `attach` anyway. Default: the `if_exists` of a mapping that targets the same item, else `skip`' -r -f -a "skip\t''
attach\t''"
complete -c outbox -n "__fish_outbox_using_subcommand send" -l config -d 'Config file (default: $OUTBOX_CONFIG, else ~/.config/outbox/config.toml on Linux)' -r -F
complete -c outbox -n "__fish_outbox_using_subcommand send" -l log-format -d 'Log format on stderr: text (coloured only on a terminal, never with NO_COLOR) or json' -r -f -a "text\t''
json\t''"
complete -c outbox -n "__fish_outbox_using_subcommand send" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG wins over it'
complete -c outbox -n "__fish_outbox_using_subcommand send" -s q -l quiet -d 'Log only errors'
complete -c outbox -n "__fish_outbox_using_subcommand send" -s h -l help -d 'Print help'
complete -c outbox -n "__fish_outbox_using_subcommand mail" -l to -d 'Recipient (repeat for several); at least one of --to, --cc, --bcc' -r
complete -c outbox -n "__fish_outbox_using_subcommand mail" -l cc -d 'Copy recipient (repeat for several)' -r
complete -c outbox -n "__fish_outbox_using_subcommand mail" -l bcc -d 'Blind copy recipient (repeat for several)' -r
complete -c outbox -n "__fish_outbox_using_subcommand mail" -l subject -d 'Subject; placeholders as in `[mapping.new_message]` ({name} {stem} {ext} {size} {date} {count} {names}). Default: the file names' -r
complete -c outbox -n "__fish_outbox_using_subcommand mail" -l body -d 'Body text (placeholders as for --subject). Default: "Attached: {names}."' -r
complete -c outbox -n "__fish_outbox_using_subcommand mail" -l body-file -d 'Read the body from this file (HTML when it ends in .html or .htm)' -r -F
complete -c outbox -n "__fish_outbox_using_subcommand mail" -l user -d 'Mailbox to send from: `me` (default), a UPN or a user id' -r
complete -c outbox -n "__fish_outbox_using_subcommand mail" -l key -d 'An idempotency key: a re-run with the same key (and mailbox) finds the earlier message (Sent Items, then Drafts) and reports or resumes it instead of mailing again' -r
complete -c outbox -n "__fish_outbox_using_subcommand mail" -l config -d 'Config file (default: $OUTBOX_CONFIG, else ~/.config/outbox/config.toml on Linux)' -r -F
complete -c outbox -n "__fish_outbox_using_subcommand mail" -l log-format -d 'Log format on stderr: text (coloured only on a terminal, never with NO_COLOR) or json' -r -f -a "text\t''
json\t''"
complete -c outbox -n "__fish_outbox_using_subcommand mail" -l draft -d 'Leave the message as a draft, fully attached; print the draft\'s id instead'
complete -c outbox -n "__fish_outbox_using_subcommand mail" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG wins over it'
complete -c outbox -n "__fish_outbox_using_subcommand mail" -s q -l quiet -d 'Log only errors'
complete -c outbox -n "__fish_outbox_using_subcommand mail" -s h -l help -d 'Print help'
complete -c outbox -n "__fish_outbox_using_subcommand status" -l state -d 'Only entries (or messages of mailing folders) in this state' -r -f -a "settling\t''
pending\t''
uploading\t''
done\t''
failed\t''
rejected\t''
canceled\t''
drafting\t''
attaching\t''
sending\t''
sent\t''
drafted\t''
unconfirmed\t''"
complete -c outbox -n "__fish_outbox_using_subcommand status" -l config -d 'Config file (default: $OUTBOX_CONFIG, else ~/.config/outbox/config.toml on Linux)' -r -F
complete -c outbox -n "__fish_outbox_using_subcommand status" -l log-format -d 'Log format on stderr: text (coloured only on a terminal, never with NO_COLOR) or json' -r -f -a "text\t''
json\t''"
complete -c outbox -n "__fish_outbox_using_subcommand status" -l json -d 'One JSON array of entries instead of the table'
complete -c outbox -n "__fish_outbox_using_subcommand status" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG wins over it'
complete -c outbox -n "__fish_outbox_using_subcommand status" -s q -l quiet -d 'Log only errors'
complete -c outbox -n "__fish_outbox_using_subcommand status" -s h -l help -d 'Print help'
complete -c outbox -n "__fish_outbox_using_subcommand retry" -l config -d 'Config file (default: $OUTBOX_CONFIG, else ~/.config/outbox/config.toml on Linux)' -r -F
complete -c outbox -n "__fish_outbox_using_subcommand retry" -l log-format -d 'Log format on stderr: text (coloured only on a terminal, never with NO_COLOR) or json' -r -f -a "text\t''
json\t''"
complete -c outbox -n "__fish_outbox_using_subcommand retry" -l failed -d 'Retry every failed entry'
complete -c outbox -n "__fish_outbox_using_subcommand retry" -l resend -d 'Mail a done file of a mailing mapping again, on purpose, in a new message (the mailbox is not searched for it first)'
complete -c outbox -n "__fish_outbox_using_subcommand retry" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG wins over it'
complete -c outbox -n "__fish_outbox_using_subcommand retry" -s q -l quiet -d 'Log only errors'
complete -c outbox -n "__fish_outbox_using_subcommand retry" -s h -l help -d 'Print help'
complete -c outbox -n "__fish_outbox_using_subcommand cancel" -l config -d 'Config file (default: $OUTBOX_CONFIG, else ~/.config/outbox/config.toml on Linux)' -r -F
complete -c outbox -n "__fish_outbox_using_subcommand cancel" -l log-format -d 'Log format on stderr: text (coloured only on a terminal, never with NO_COLOR) or json' -r -f -a "text\t''
json\t''"
complete -c outbox -n "__fish_outbox_using_subcommand cancel" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG wins over it'
complete -c outbox -n "__fish_outbox_using_subcommand cancel" -s q -l quiet -d 'Log only errors'
complete -c outbox -n "__fish_outbox_using_subcommand cancel" -s h -l help -d 'Print help'
complete -c outbox -n "__fish_outbox_using_subcommand pause" -l for -d 'Resume by itself after this long ("30m", "2h", "1h30m")' -r
complete -c outbox -n "__fish_outbox_using_subcommand pause" -l config -d 'Config file (default: $OUTBOX_CONFIG, else ~/.config/outbox/config.toml on Linux)' -r -F
complete -c outbox -n "__fish_outbox_using_subcommand pause" -l log-format -d 'Log format on stderr: text (coloured only on a terminal, never with NO_COLOR) or json' -r -f -a "text\t''
json\t''"
complete -c outbox -n "__fish_outbox_using_subcommand pause" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG wins over it'
complete -c outbox -n "__fish_outbox_using_subcommand pause" -s q -l quiet -d 'Log only errors'
complete -c outbox -n "__fish_outbox_using_subcommand pause" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c outbox -n "__fish_outbox_using_subcommand resume" -l config -d 'Config file (default: $OUTBOX_CONFIG, else ~/.config/outbox/config.toml on Linux)' -r -F
complete -c outbox -n "__fish_outbox_using_subcommand resume" -l log-format -d 'Log format on stderr: text (coloured only on a terminal, never with NO_COLOR) or json' -r -f -a "text\t''
json\t''"
complete -c outbox -n "__fish_outbox_using_subcommand resume" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG wins over it'
complete -c outbox -n "__fish_outbox_using_subcommand resume" -s q -l quiet -d 'Log only errors'
complete -c outbox -n "__fish_outbox_using_subcommand resume" -s h -l help -d 'Print help'
complete -c outbox -n "__fish_outbox_using_subcommand login" -l config -d 'Config file (default: $OUTBOX_CONFIG, else ~/.config/outbox/config.toml on Linux)' -r -F
complete -c outbox -n "__fish_outbox_using_subcommand login" -l log-format -d 'Log format on stderr: text (coloured only on a terminal, never with NO_COLOR) or json' -r -f -a "text\t''
json\t''"
complete -c outbox -n "__fish_outbox_using_subcommand login" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG wins over it'
complete -c outbox -n "__fish_outbox_using_subcommand login" -s q -l quiet -d 'Log only errors'
complete -c outbox -n "__fish_outbox_using_subcommand login" -s h -l help -d 'Print help'
complete -c outbox -n "__fish_outbox_using_subcommand logout" -l config -d 'Config file (default: $OUTBOX_CONFIG, else ~/.config/outbox/config.toml on Linux)' -r -F
complete -c outbox -n "__fish_outbox_using_subcommand logout" -l log-format -d 'Log format on stderr: text (coloured only on a terminal, never with NO_COLOR) or json' -r -f -a "text\t''
json\t''"
complete -c outbox -n "__fish_outbox_using_subcommand logout" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG wins over it'
complete -c outbox -n "__fish_outbox_using_subcommand logout" -s q -l quiet -d 'Log only errors'
complete -c outbox -n "__fish_outbox_using_subcommand logout" -s h -l help -d 'Print help'
complete -c outbox -n "__fish_outbox_using_subcommand whoami" -l config -d 'Config file (default: $OUTBOX_CONFIG, else ~/.config/outbox/config.toml on Linux)' -r -F
complete -c outbox -n "__fish_outbox_using_subcommand whoami" -l log-format -d 'Log format on stderr: text (coloured only on a terminal, never with NO_COLOR) or json' -r -f -a "text\t''
json\t''"
complete -c outbox -n "__fish_outbox_using_subcommand whoami" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG wins over it'
complete -c outbox -n "__fish_outbox_using_subcommand whoami" -s q -l quiet -d 'Log only errors'
complete -c outbox -n "__fish_outbox_using_subcommand whoami" -s h -l help -d 'Print help'
complete -c outbox -n "__fish_outbox_using_subcommand check" -l config -d 'Config file (default: $OUTBOX_CONFIG, else ~/.config/outbox/config.toml on Linux)' -r -F
complete -c outbox -n "__fish_outbox_using_subcommand check" -l log-format -d 'Log format on stderr: text (coloured only on a terminal, never with NO_COLOR) or json' -r -f -a "text\t''
json\t''"
complete -c outbox -n "__fish_outbox_using_subcommand check" -l json -d 'Print the findings as a JSON array of {"level","what","message"}'
complete -c outbox -n "__fish_outbox_using_subcommand check" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG wins over it'
complete -c outbox -n "__fish_outbox_using_subcommand check" -s q -l quiet -d 'Log only errors'
complete -c outbox -n "__fish_outbox_using_subcommand check" -s h -l help -d 'Print help'
complete -c outbox -n "__fish_outbox_using_subcommand verify" -l config -d 'Config file (default: $OUTBOX_CONFIG, else ~/.config/outbox/config.toml on Linux)' -r -F
complete -c outbox -n "__fish_outbox_using_subcommand verify" -l log-format -d 'Log format on stderr: text (coloured only on a terminal, never with NO_COLOR) or json' -r -f -a "text\t''
json\t''"
complete -c outbox -n "__fish_outbox_using_subcommand verify" -l all -d 'Verify every done entry'
complete -c outbox -n "__fish_outbox_using_subcommand verify" -l json -d 'One JSON array of {"id","file","result","message"} instead of lines'
complete -c outbox -n "__fish_outbox_using_subcommand verify" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG wins over it'
complete -c outbox -n "__fish_outbox_using_subcommand verify" -s q -l quiet -d 'Log only errors'
complete -c outbox -n "__fish_outbox_using_subcommand verify" -s h -l help -d 'Print help'
complete -c outbox -n "__fish_outbox_using_subcommand items" -l search -d 'Only items whose text (messages) or subject (events) contains this' -r
complete -c outbox -n "__fish_outbox_using_subcommand items" -l top -d 'How many items to list (1-1000), newest first' -r
complete -c outbox -n "__fish_outbox_using_subcommand items" -l user -d 'Mailbox: `me` (default), a UPN or a user id' -r
complete -c outbox -n "__fish_outbox_using_subcommand items" -l config -d 'Config file (default: $OUTBOX_CONFIG, else ~/.config/outbox/config.toml on Linux)' -r -F
complete -c outbox -n "__fish_outbox_using_subcommand items" -l log-format -d 'Log format on stderr: text (coloured only on a terminal, never with NO_COLOR) or json' -r -f -a "text\t''
json\t''"
complete -c outbox -n "__fish_outbox_using_subcommand items" -l json -d 'One JSON array of {"id","kind","subject","date","isDraft","attachments"}'
complete -c outbox -n "__fish_outbox_using_subcommand items" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG wins over it'
complete -c outbox -n "__fish_outbox_using_subcommand items" -s q -l quiet -d 'Log only errors'
complete -c outbox -n "__fish_outbox_using_subcommand items" -s h -l help -d 'Print help'
complete -c outbox -n "__fish_outbox_using_subcommand init" -l config -d 'Config file (default: $OUTBOX_CONFIG, else ~/.config/outbox/config.toml on Linux)' -r -F
complete -c outbox -n "__fish_outbox_using_subcommand init" -l log-format -d 'Log format on stderr: text (coloured only on a terminal, never with NO_COLOR) or json' -r -f -a "text\t''
json\t''"
complete -c outbox -n "__fish_outbox_using_subcommand init" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG wins over it'
complete -c outbox -n "__fish_outbox_using_subcommand init" -s q -l quiet -d 'Log only errors'
complete -c outbox -n "__fish_outbox_using_subcommand init" -s h -l help -d 'Print help'
complete -c outbox -n "__fish_outbox_using_subcommand service" -l platform -d 'Which platform\'s service files (tests check all three on one machine)' -r -f -a "linux\t''
macos\t''
windows\t''"
complete -c outbox -n "__fish_outbox_using_subcommand service" -l config -d 'Config file (default: $OUTBOX_CONFIG, else ~/.config/outbox/config.toml on Linux)' -r -F
complete -c outbox -n "__fish_outbox_using_subcommand service" -l log-format -d 'Log format on stderr: text (coloured only on a terminal, never with NO_COLOR) or json' -r -f -a "text\t''
json\t''"
complete -c outbox -n "__fish_outbox_using_subcommand service" -l dry-run -d 'Print the files and commands instead of writing or running them (after the same checks as the real install, failing as it would)'
complete -c outbox -n "__fish_outbox_using_subcommand service" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG wins over it'
complete -c outbox -n "__fish_outbox_using_subcommand service" -s q -l quiet -d 'Log only errors'
complete -c outbox -n "__fish_outbox_using_subcommand service" -s h -l help -d 'Print help'
complete -c outbox -n "__fish_outbox_using_subcommand sandbox" -l port -d 'Port on 127.0.0.1 (0 = any free port)' -r
complete -c outbox -n "__fish_outbox_using_subcommand sandbox" -l data-dir -d 'Where the sandbox keeps its state: items, attachments, upload sessions, issued tokens and the --tls CA; a sandbox restarted on the same dir serves them again (default: a temp dir)' -r -F
complete -c outbox -n "__fish_outbox_using_subcommand sandbox" -l token -d 'Accept this fixed bearer token as a delegated token of the user `me`' -r
complete -c outbox -n "__fish_outbox_using_subcommand sandbox" -l allow-uid -d 'Also serve this local user (a uid; repeatable): the sandbox serves only its own user and root (on Linux), so an agent run as another user needs this' -r
complete -c outbox -n "__fish_outbox_using_subcommand sandbox" -l config -r -F
complete -c outbox -n "__fish_outbox_using_subcommand sandbox" -l log-format -d 'Log format on stderr: text (coloured only on a terminal, never with NO_COLOR) or json' -r -f -a "text\t''
json\t''"
complete -c outbox -n "__fish_outbox_using_subcommand sandbox" -l tls -d 'Serve HTTPS with a throw-away CA written to DATA_DIR/ca.pem'
complete -c outbox -n "__fish_outbox_using_subcommand sandbox" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG wins over it'
complete -c outbox -n "__fish_outbox_using_subcommand sandbox" -s q -l quiet -d 'Log only errors'
complete -c outbox -n "__fish_outbox_using_subcommand sandbox" -s h -l help -d 'Print help'
complete -c outbox -n "__fish_outbox_using_subcommand completions" -l config -r -F
complete -c outbox -n "__fish_outbox_using_subcommand completions" -l log-format -d 'Log format on stderr: text (coloured only on a terminal, never with NO_COLOR) or json' -r -f -a "text\t''
json\t''"
complete -c outbox -n "__fish_outbox_using_subcommand completions" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG wins over it'
complete -c outbox -n "__fish_outbox_using_subcommand completions" -s q -l quiet -d 'Log only errors'
complete -c outbox -n "__fish_outbox_using_subcommand completions" -s h -l help -d 'Print help'
complete -c outbox -n "__fish_outbox_using_subcommand man" -l config -r -F
complete -c outbox -n "__fish_outbox_using_subcommand man" -l log-format -d 'Log format on stderr: text (coloured only on a terminal, never with NO_COLOR) or json' -r -f -a "text\t''
json\t''"
complete -c outbox -n "__fish_outbox_using_subcommand man" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG wins over it'
complete -c outbox -n "__fish_outbox_using_subcommand man" -s q -l quiet -d 'Log only errors'
complete -c outbox -n "__fish_outbox_using_subcommand man" -s h -l help -d 'Print help'
complete -c outbox -n "__fish_outbox_using_subcommand demo" -l exit-after -d 'Drop N sample files, exit 0 once they are attached' -r
complete -c outbox -n "__fish_outbox_using_subcommand demo" -l config -r -F
complete -c outbox -n "__fish_outbox_using_subcommand demo" -l log-format -d 'Log format on stderr: text (coloured only on a terminal, never with NO_COLOR) or json' -r -f -a "text\t''
json\t''"
complete -c outbox -n "__fish_outbox_using_subcommand demo" -l no-samples -d 'Start with an empty folder instead of three sample files'
complete -c outbox -n "__fish_outbox_using_subcommand demo" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace); RUST_LOG wins over it'
complete -c outbox -n "__fish_outbox_using_subcommand demo" -s q -l quiet -d 'Log only errors'
complete -c outbox -n "__fish_outbox_using_subcommand demo" -s h -l help -d 'Print help'
complete -c outbox -n "__fish_outbox_using_subcommand help; and not __fish_seen_subcommand_from run send mail status retry cancel pause resume login logout whoami check verify items init service sandbox completions man demo help" -f -a "run" -d 'Run the agent: attach what is new, then watch until SIGINT/SIGTERM'
complete -c outbox -n "__fish_outbox_using_subcommand help; and not __fish_seen_subcommand_from run send mail status retry cancel pause resume login logout whoami check verify items init service sandbox completions man demo help" -f -a "send" -d 'Attach one file now; prints the attachment id on stdout (does not touch the ledger)'
complete -c outbox -n "__fish_outbox_using_subcommand help; and not __fish_seen_subcommand_from run send mail status retry cancel pause resume login logout whoami check verify items init service sandbox completions man demo help" -f -a "mail" -d 'Mail files now as one new message (draft, attach, send); prints the sent message\'s internetMessageId on stdout (does not touch the ledger). For scripts that used `mailx -a`'
complete -c outbox -n "__fish_outbox_using_subcommand help; and not __fish_seen_subcommand_from run send mail status retry cancel pause resume login logout whoami check verify items init service sandbox completions man demo help" -f -a "status" -d 'Show the ledger: one row per file version, its state, progress and error'
complete -c outbox -n "__fish_outbox_using_subcommand help; and not __fish_seen_subcommand_from run send mail status retry cancel pause resume login logout whoami check verify items init service sandbox completions man demo help" -f -a "retry" -d 'Put failed entries back in the queue: one by ID, or all with --failed. A message\'s ID retries it: a failed one goes on, an unconfirmed one is sent only if its draft is still a draft (--failed never takes an unconfirmed message). `--resend ID` mails a done file of a mailing folder again, on purpose, in a new message'
complete -c outbox -n "__fish_outbox_using_subcommand help; and not __fish_seen_subcommand_from run send mail status retry cancel pause resume login logout whoami check verify items init service sandbox completions man demo help" -f -a "cancel" -d 'Stop an upload: delete its upload session and mark it canceled. A failed or rejected entry (its file deleted, say) is cleared: canceled, and no longer counted by `run --once`'
complete -c outbox -n "__fish_outbox_using_subcommand help; and not __fish_seen_subcommand_from run send mail status retry cancel pause resume login logout whoami check verify items init service sandbox completions man demo help" -f -a "pause" -d 'Stop the running agent taking new files (one mapping, or all) without stopping it'
complete -c outbox -n "__fish_outbox_using_subcommand help; and not __fish_seen_subcommand_from run send mail status retry cancel pause resume login logout whoami check verify items init service sandbox completions man demo help" -f -a "resume" -d 'Take new files again (one mapping, or all), and those dropped while paused'
complete -c outbox -n "__fish_outbox_using_subcommand help; and not __fish_seen_subcommand_from run send mail status retry cancel pause resume login logout whoami check verify items init service sandbox completions man demo help" -f -a "login" -d 'Sign in interactively (device code); needs auth.method = "device_code"'
complete -c outbox -n "__fish_outbox_using_subcommand help; and not __fish_seen_subcommand_from run send mail status retry cancel pause resume login logout whoami check verify items init service sandbox completions man demo help" -f -a "logout" -d 'Forget cached tokens'
complete -c outbox -n "__fish_outbox_using_subcommand help; and not __fish_seen_subcommand_from run send mail status retry cancel pause resume login logout whoami check verify items init service sandbox completions man demo help" -f -a "whoami" -d 'Show the signed-in account (or the app, for client credentials)'
complete -c outbox -n "__fish_outbox_using_subcommand help; and not __fish_seen_subcommand_from run send mail status retry cancel pause resume login logout whoami check verify items init service sandbox completions man demo help" -f -a "check" -d 'Validate config, folders, sign-in and every target item; exit 0 unless there is an error (warnings alone pass)'
complete -c outbox -n "__fish_outbox_using_subcommand help; and not __fish_seen_subcommand_from run send mail status retry cancel pause resume login logout whoami check verify items init service sandbox completions man demo help" -f -a "verify" -d 'Read done attachments back from Graph and compare their SHA-256 with the ledger\'s'
complete -c outbox -n "__fish_outbox_using_subcommand help; and not __fish_seen_subcommand_from run send mail status retry cancel pause resume login logout whoami check verify items init service sandbox completions man demo help" -f -a "items" -d 'List recent messages or events with their ids, to pick a mapping\'s target'
complete -c outbox -n "__fish_outbox_using_subcommand help; and not __fish_seen_subcommand_from run send mail status retry cancel pause resume login logout whoami check verify items init service sandbox completions man demo help" -f -a "init" -d 'Write a commented starter config (never overwrites)'
complete -c outbox -n "__fish_outbox_using_subcommand help; and not __fish_seen_subcommand_from run send mail status retry cancel pause resume login logout whoami check verify items init service sandbox completions man demo help" -f -a "service" -d 'Run at login: install, uninstall or show the service (systemd user unit, LaunchAgent, Scheduled Task)'
complete -c outbox -n "__fish_outbox_using_subcommand help; and not __fish_seen_subcommand_from run send mail status retry cancel pause resume login logout whoami check verify items init service sandbox completions man demo help" -f -a "sandbox" -d 'A local Microsoft Graph stand-in, on loopback'
complete -c outbox -n "__fish_outbox_using_subcommand help; and not __fish_seen_subcommand_from run send mail status retry cancel pause resume login logout whoami check verify items init service sandbox completions man demo help" -f -a "completions" -d 'Print the shell completion script: outbox completions bash > ~/.local/share/bash-completion/completions/outbox'
complete -c outbox -n "__fish_outbox_using_subcommand help; and not __fish_seen_subcommand_from run send mail status retry cancel pause resume login logout whoami check verify items init service sandbox completions man demo help" -f -a "man" -d 'Show the manual page (the configuration, files and examples); off a terminal, print it (roff): outbox man > ~/.local/share/man/man1/outbox.1'
complete -c outbox -n "__fish_outbox_using_subcommand help; and not __fish_seen_subcommand_from run send mail status retry cancel pause resume login logout whoami check verify items init service sandbox completions man demo help" -f -a "demo" -d 'Zero-setup tour against the built-in sandbox'
complete -c outbox -n "__fish_outbox_using_subcommand help; and not __fish_seen_subcommand_from run send mail status retry cancel pause resume login logout whoami check verify items init service sandbox completions man demo help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
