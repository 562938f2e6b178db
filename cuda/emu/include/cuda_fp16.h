#pragma once
#include "emu_half.h"  // host emulation: f16 in emu_half.h
