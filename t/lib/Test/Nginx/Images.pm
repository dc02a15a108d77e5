package Test::Nginx::Images;

# Images drawn by the tests themselves (no downloaded assets): PNGs with real texture, a
# truncated one, and a decompression bomb that claims a huge size. Core Perl only.

use strict;
use warnings;
use Compress::Zlib qw(compress crc32);
use Exporter 'import';

our @EXPORT_OK = qw(png truncated_png bomb_png);

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
