package Test::Nginx::Images;

# Images drawn by the tests themselves (no downloaded assets): PNGs with real texture, a
# truncated one, and a decompression bomb that claims a huge size. Core Perl only.

use strict;
use warnings;
use Compress::Zlib qw(compress crc32);
use Exporter 'import';

our @EXPORT_OK = qw(png jpeg truncated_png bomb_png);

sub _chunk {
    my ($type, $data) = @_;
    return pack('N', length $data) . $type . $data . pack('N', crc32($type . $data));
}

sub _png_from_rows {
    my ($w, $h, $color_type, $raw) = @_;
    return "\x89PNG\r\n\x1a\n"
        . _chunk('IHDR', pack('NNCCCCC', $w, $h, 8, $color_type, 0, 0, 0))
        . _chunk('IDAT', compress($raw))
        . _chunk('IEND', '');
}

# An RGB PNG with gradients and texture: lossy formats make it much smaller.
sub png {
    my ($w, $h, $seed) = @_;
    $seed //= 1;
    my $raw = '';
    for my $y (0 .. $h - 1) {
        my $row = "\0";
        for my $x (0 .. $w - 1) {
            my $n = (($x * 7919) ^ ($y * 104729) ^ $seed) % 23;
            $row .= pack('CCC', int(255 * $x / $w), int(255 * $y / $h), (($x + $y) % 200) + $n);
        }
        $raw .= $row;
    }
    return _png_from_rows($w, $h, 2, $raw);
}

# A baseline JPEG (YCbCr 4:4:4, 8x8 blocks) drawn directly as DCT coefficients: a gradient in
# each block's DC term and pseudo-random texture in its first AC terms, so tests get a real,
# textured JPEG source quickly and without an image library. Huffman tables are flat (every
# AC symbol 8 bits, every DC size 4 bits): larger than an optimized file, valid for any decoder.
sub jpeg {
    my ($w, $h, $seed) = @_;
    $seed //= 1;
    my @q = (8) x 64;
    my ($bw, $bh) = (int(($w + 7) / 8), int(($h + 7) / 8));
    my ($bits, $nbits, $out) = (0, 0, '');
    my $put = sub {
        my ($code, $len) = @_;
        for (my $i = $len - 1; $i >= 0; $i--) {
            $bits = ($bits << 1) | (($code >> $i) & 1);
            if (++$nbits == 8) {
                $out .= chr($bits);
                $out .= "\0" if $bits == 0xff;
                ($bits, $nbits) = (0, 0);
            }
        }
    };
    my $magnitude = sub {
        my ($v) = @_;
        my $size = 0;
        $size++ while abs($v) >= (1 << $size);
        return ($size, $v >= 0 ? $v : $v + (1 << $size) - 1);
    };
    my @pred = (0, 0, 0);
    for my $by (0 .. $bh - 1) {
        for my $bx (0 .. $bw - 1) {
            for my $c (0 .. 2) {
                # DC of a level-shifted block is 8x its mean: gradients span -1000..1000.
                my $level = $c == 0 ? ($bx / $bw + $by / $bh) - 1
                    : $c == 1 ? $bx / $bw - 0.5 : 0.5 - $by / $bh;
                my @zz = (int($level * 900 / $q[0]), (0) x 63);
                for my $k (1 .. 9) {
                    my $n = (($bx * 7919) ^ ($by * 104729) ^ ($k * 31) ^ ($seed * 17) ^ $c) % 19;
                    $zz[$k] = $n - 9 if $c == 0 || $k < 3;
                }
                my ($dsize, $dbits) = $magnitude->($zz[0] - $pred[$c]);
                $pred[$c] = $zz[0];
                $put->($dsize, 4);
                $put->($dbits, $dsize) if $dsize;
                my $run = 0;
                for my $k (1 .. 63) {
                    if ($zz[$k] == 0) { $run++; next }
                    while ($run > 15) { $put->(_ac_code(0xf0), 8); $run -= 16 }
                    my ($s, $b) = $magnitude->($zz[$k]);
                    $put->(_ac_code(($run << 4) | $s), 8);
                    $put->($b, $s);
                    $run = 0;
                }
                $put->(_ac_code(0x00), 8) if $run;
            }
        }
    }
    $put->((1 << (8 - $nbits)) - 1, 8 - $nbits) if $nbits;    # pad the last byte with 1 bits
    my $seg = sub { my ($m, $d) = @_; return pack('CC', 0xff, $m) . pack('n', length($d) + 2) . $d };
    my $dqt = join '', map { chr($_) . pack('C64', @q) } 0, 1;
    my $sof = pack('CnnC', 8, $h, $w, 3) . pack('C3' x 3, 1, 0x11, 0, 2, 0x11, 1, 3, 0x11, 1);
    my @dc_bits = (0, 0, 0, 12, (0) x 12);
    my @ac_syms = _ac_symbols();
    my @ac_bits = ((0) x 7, scalar @ac_syms, (0) x 8);
    my $dht = '';
    for my $class_id (0x00, 0x01) {
        $dht .= chr($class_id) . pack('C16', @dc_bits) . pack('C*', 0 .. 11);
    }
    for my $class_id (0x10, 0x11) {
        $dht .= chr($class_id) . pack('C16', @ac_bits) . pack('C*', @ac_syms);
    }
    my $sos = pack('C', 3) . pack('CC' x 3, 1, 0x00, 2, 0x11, 3, 0x11) . pack('CCC', 0, 63, 0);
    return "\xff\xd8" . $seg->(0xe0, "JFIF\0\x01\x01\0\0\x01\0\x01\0\0")
        . $seg->(0xdb, $dqt) . $seg->(0xc0, $sof) . $seg->(0xc4, $dht) . $seg->(0xda, $sos)
        . $out . "\xff\xd9";
}

# Every AC symbol a baseline encoder can emit: EOB, ZRL, and run/size for sizes 1..10.
my @AC_SYMBOLS = (0x00, 0xf0, map { my $r = $_; map { ($r << 4) | $_ } 1 .. 10 } 0 .. 15);
my %AC_CODE = map { $AC_SYMBOLS[$_] => $_ } 0 .. $#AC_SYMBOLS;
sub _ac_symbols { return @AC_SYMBOLS }
sub _ac_code { return $AC_CODE{$_[0]} }

# The first half of a valid PNG: no IEND, pixel data cut short.
sub truncated_png {
    my $p = png(@_);
    return substr($p, 0, int(length($p) / 2));
}

# A PNG whose header claims 30000 x 30000 pixels (900 megapixels) with a tiny body: decoding
# it would need gigabytes. It must be refused from its header alone.
sub bomb_png {
    my $raw = "\0" . ("\0" x 30000);
    return "\x89PNG\r\n\x1a\n"
        . _chunk('IHDR', pack('NNCCCCC', 30000, 30000, 8, 0, 0, 0, 0))
        . _chunk('IDAT', compress($raw x 4))
        . _chunk('IEND', '');
}

1;
