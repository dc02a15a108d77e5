#!/usr/bin/env perl
# Reads the per-process logs valgrind wrote for scripts/memcheck (vg.PID.log, run with -v
# --keep-debuginfo=yes --fullpath-after=) and prints: processes, errors by kind, every error
# with a frame in the module, and every other error the suppressions did not cover. Fails on
# any of them, except module reports listed in known.txt (printed as KNOWN, like a TODO test).
# Core Perl only.
use strict;
use warnings;

my ($dir, $module, $known_file) = @ARGV;
die "usage: $0 DIR MODULE.so [KNOWN.txt]\n" unless defined $dir && defined $module;
(my $module_name = $module) =~ s{.*/}{};

# Lines of known.txt: "KIND | FUNCTION | why" (kind as classified below, function a substring
# of a module frame's function name).
my @known;
if (defined $known_file && open my $kh, '<', $known_file) {
    while (<$kh>) {
        next if /^\s*(#|$)/;
        my ($kind, $fn, $why) = map { s/^\s+|\s+$//gr } split /\|/, $_, 3;
        push @known, { kind => $kind, fn => $fn, why => $why // '', seen => 0 };
    }
}

# An nginx process holds C code (nginx, libc, libpcre, ...) and the module: the module's Rust
# (its crates and the Rust std linked into it) and the C it links (libwebp, rav1e's assembly).
# A frame is the module's when it is Rust source, in a crate from the cargo registry other
# than nginx-src, in the module's own tree, or, without debug info, in the module's object.
sub module_frame {
    my ($loc) = @_;
    return 1 if $loc =~ /\.rs:\d+\)?$/;
    return 1 if $loc =~ m{/\.cargo/registry/} && $loc !~ m{/nginx-src-};
    return 1 if $loc =~ /\(in [^)]*\Q$module_name\E\)/;
    return 0;
}

sub classify {
    my ($head) = @_;
    return 'definitely lost' if $head =~ /are definitely lost/;
    return 'invalid read' if $head =~ /^Invalid read/;
    return 'invalid write' if $head =~ /^Invalid write/;
    return 'invalid free' if $head =~ /^(Invalid free|Mismatched free)/;
    return 'uninitialised' if $head =~ /uninitialised|unaddressable/;
    return 'overlap' if $head =~ /^Source and destination overlap/;
    return 'invalid jump' if $head =~ /^Jump to the invalid address/;
    return 'fishy argument' if $head =~ /^Argument .* of function/;
    return 'other';
}

my (%procs, %parent, %reads_module, %kinds, %suppressed, @module_errors, @other_errors,
    @known_errors);
my ($files, $killed) = (0, 0);

for my $f (sort glob("$dir/vg.*.log")) {
    my ($pid) = $f =~ /vg\.(\d+)\.log$/ or next;
    open my $fh, '<:raw', $f or die "$f: $!\n";
    my @lines = <$fh>;
    close $fh;
    $files++;
    my ($role, $block, $errors, $summary) = ('nginx', undef, 0, undef);
    my $finish = sub {
        my $b = $block;
        undef $block;
        return unless $b && grep { /^\s+at 0x/ } @$b;
        my ($head, @rest) = @$b;
        return if $head eq '(terminated)';
        my $kind = classify($head);
        $kinds{$kind}++;
        $errors++;
        my @frames = grep { /^\s+(at|by) 0x/ } @rest;
        my @mine = grep { module_frame($_) } @frames;
        my $text = "pid $pid ($role) $kind: $head\n"
            . join('', map { "    $_\n" } grep { !/UnknownInlinedFun/ } @rest[0 .. ($#rest < 40 ? $#rest : 40)]);
        if (@mine) {
            my ($k) = grep { my $k = $_; $k->{kind} eq $kind && grep { index($_, $k->{fn}) >= 0 } @mine } @known;
            if ($k) { $k->{seen}++; push @known_errors, "KNOWN ($k->{why})\n$text" }
            else { push @module_errors, $text }
        } else {
            push @other_errors, $text;
        }
    };
    my $crashed;
    for (@lines) {
        chomp;
        # Valgrind itself can fail to translate very long code (rav1e's encoder once ran out
        # of VEX temporary storage until --vex-guest-max-insns was lowered): the process dies
        # and nothing after it was checked.
        if (/the 'impossible' happened|VEX temporary storage exhausted/) {
            $crashed = $_;
            last;
        }
        if (/^--\d+-- Reading syms from .*\Q$module_name\E/) { $reads_module{$pid} = 1; next }
        if (/^--\d+-- used_suppression:\s+(\d+) (.*?) \S+:\d+( suppressed:.*)?$/) {
            $suppressed{$2} += $1;
            next;
        }
        next unless s/^==\d+== ?//;
        if (/^Command: .*\s-t(\s|$)/) { $role = 'nginx -t' }
        elsif (/^Command: .*\s-s\s/) { $role = 'nginx -s' }
        if (/^Parent PID: (\d+)/) { $parent{$pid} = $1; next }
        # With -v the errors are listed again after the first summary: count them once.
        if (/^ERROR SUMMARY: \d+ errors from (\d+) contexts/) {
            $finish->();
            $summary //= $1;
            next;
        }
        # Past the summary only the used_suppression lines (matched above) matter.
        next if defined $summary;
        # Reports are paragraphs (a headline, then its stacks) separated by empty lines; one
        # is an error when it has a stack, except the note a SIGKILLed process leaves (t/030
        # kills a worker on purpose: that process never reaches its leak check).
        if (/^\s*$/) { $finish->(); next }
        if ($block) { push @$block, $_; next }
        if (/^Process terminating with default action of signal/) {
            $block = ['(terminated)'];
            next;
        }
        $block = [$_];
    }
    if ($crashed) {
        push @other_errors, "pid $pid ($role): valgrind crashed ($crashed): see $f\n";
        $procs{$role}++;
        next;
    }
    $finish->();
    $procs{$role}++;
    # A SIGKILLed process (t/030 kills a worker on purpose) ends without a summary and never
    # ran its leak check; its errors up to the kill are counted above.
    if (!defined $summary) {
        $killed++;
    } elsif ($summary != $errors) {
        push @other_errors, "pid $pid: valgrind counted $summary error contexts, this script"
            . " read $errors: the log format was not understood\n";
    }
}

# Forked workers inherit the module from their master.
my $with_module = grep {
    my ($p, $n) = ($_, 0);
    $p = $parent{$p} while !$reads_module{$p} && defined $parent{$p} && $n++ < 8;
    $reads_module{$p};
} map { /vg\.(\d+)\.log$/ ? $1 : () } glob("$dir/vg.*.log");

print "memcheck: $files processes under valgrind ("
    . join(', ', map { "$procs{$_} $_" } sort keys %procs)
    . "), $with_module with the module loaded, $killed SIGKILLed (no leak check)\n";
print "memcheck: reports by kind: "
    . (%kinds ? join(', ', map { "$_ $kinds{$_}" } sort keys %kinds) : 'none') . "\n";
print "memcheck: suppressed by nginx.supp: "
    . (%suppressed ? join('; ', map { "$suppressed{$_} x $_" } sort keys %suppressed) : 'none')
    . "\n";
printf "memcheck: %d reports attributed to the module (%d known), %d other unsuppressed\n",
    @module_errors + @known_errors, scalar @known_errors, scalar @other_errors;
print "--- attributed to the module ---\n", @module_errors if @module_errors;
print "--- known module reports (TODO: fix, then delete from known.txt) ---\n", @known_errors
    if @known_errors;
print "--- outside the module (not suppressed) ---\n", @other_errors if @other_errors;

my $ok = $files > 0 && $with_module > 0 && !@module_errors && !@other_errors;
print $ok ? "memcheck: OK\n" : "memcheck: FAILED\n";
exit($ok ? 0 : 1);
