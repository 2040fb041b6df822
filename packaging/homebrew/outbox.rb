# Homebrew formula: builds outbox from source with cargo, installs the man page and the shell
# completions kept in packaging/, and offers `brew services start outbox` (a LaunchAgent running
# `outbox run`, like `outbox service install` writes). Set `url`/`sha256` to the release tarball
# when publishing (`brew fetch --build-from-source ./outbox.rb` prints the sha256); until then
# `brew install --HEAD ./packaging/homebrew/outbox.rb` builds the repository's head.
class Outbox < Formula
  desc "Attach every file dropped into a folder to an Outlook message or event, exactly once"
  homepage "https://github.com/outbox-agent/outbox"
  url "https://github.com/outbox-agent/outbox/archive/refs/tags/v0.1.0.tar.gz"
  sha256 "0000000000000000000000000000000000000000000000000000000000000000"
  license any_of: ["MIT", "Apache-2.0"]
  head "https://github.com/outbox-agent/outbox.git", branch: "main"

  depends_on "rust" => :build

  def install
    system "cargo", "install", "--locked", *std_cargo_args
    man1.install "packaging/man/outbox.1"
    bash_completion.install "packaging/completions/outbox.bash" => "outbox"
    zsh_completion.install "packaging/completions/_outbox"
    fish_completion.install "packaging/completions/outbox.fish"
    pkgshare.install "config.example.toml"
  end

  def caveats
    <<~EOS
      Write a starter config and check it:
        outbox init && outbox check
      An example with every key: #{opt_pkgshare}/config.example.toml
    EOS
  end

  service do
    run [opt_bin/"outbox", "run"]
    keep_alive successful_exit: false
    log_path var/"log/outbox.log"
    error_log_path var/"log/outbox.log"
  end

  test do
    assert_match "outbox #{version}", shell_output("#{bin}/outbox --version")
  end
end
