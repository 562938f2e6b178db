#pragma once
#include "emu_half.h"  // host emulation: bf16 in emu_half.h
