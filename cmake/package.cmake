# SPDX-License-Identifier: MIT
#
# Debian packages, made by CPack from the install rules' components
# (cmake/install.cmake, examples/CMakeLists.txt and the Python rule below):
#
#   component  package               holds
#   runtime    libzpipe0             libzpipe.so.0 and its SONAME link
#   dev        libzpipe-dev          zpipe.h, zpipe_version.h, libzpipe.a,
#                                    libzpipe.so, zpipe.pc, the CMake package
#   cli        zpipe                 /usr/bin/zpipe, its manual page, the
#                                    example plugin in LIBDIR/zpipe
#   python     python3-zpipe-worker  python/zpipe_worker, when it exists
#
# Each package also gets the files Debian wants in /usr/share/doc/PACKAGE:
# copyright (from LICENSE), changelog.Debian.gz (from the headings of
# CHANGELOG.md) and changelog.gz (CHANGELOG.md itself). Those rules are
# EXCLUDE_FROM_ALL: a plain `cmake --install` leaves them out, CPack's
# installs of one component at a time take them.
#
# Configure with -DCMAKE_INSTALL_PREFIX=/usr (LIBDIR is then Debian's
# multiarch directory), build, then `cpack -G DEB`: scripts/package.sh does
# all that. Depends of the packages with binaries come from dpkg-shlibdeps;
# those of libzpipe-dev and python3-zpipe-worker are written below.
# docs/packaging.md has the details and lintian's remaining warnings.

set(ZP_DEB_DOC_DIR ${CMAKE_INSTALL_DATAROOTDIR}/doc)
set(ZP_DEB_STAGE ${PROJECT_BINARY_DIR}/deb)
set(ZP_DEB_MAINTAINER "zpipe authors <zpipe@example.org>" CACHE STRING
    "The Maintainer of the Debian packages, \"NAME <EMAIL>\"")
set(ZP_DEB_RELEASE 1)
set(ZP_DEB_VERSION ${PROJECT_VERSION}-${ZP_DEB_RELEASE})
file(MAKE_DIRECTORY ${ZP_DEB_STAGE})
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
             ${PROJECT_SOURCE_DIR}/LICENSE ${PROJECT_SOURCE_DIR}/CHANGELOG.md
             ${PROJECT_SOURCE_DIR}/docs/zpipe.1)

# gzip -9n, as Debian wants it: best compression, no name, no time stamp.
function(zp_gzip src dst)
  execute_process(COMMAND gzip -9nc INPUT_FILE ${src} OUTPUT_FILE ${dst}
                  RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "gzip ${src}: ${rc}")
  endif()
endfunction()

# ---- The manual page (every install) -------------------------------------

zp_gzip(${PROJECT_SOURCE_DIR}/docs/zpipe.1 ${ZP_DEB_STAGE}/zpipe.1.gz)
install(FILES ${ZP_DEB_STAGE}/zpipe.1.gz
        DESTINATION ${CMAKE_INSTALL_MANDIR}/man1 COMPONENT cli)

# ---- The Python worker package --------------------------------------------

# Where python/zpipe_worker goes, relative to the prefix: Debian's python3
# looks in /usr/lib/python3/dist-packages and, for other prefixes such as
# /usr/local, in PREFIX/lib/python3.MINOR/dist-packages.
set(ZP_PYTHON_DIR "" CACHE STRING
    "Where the zpipe_worker package is installed (empty: where Debian's /usr/bin/python3 finds it)")
set(ZP_HAVE_PYTHON FALSE)
if(EXISTS ${PROJECT_SOURCE_DIR}/python/zpipe_worker)
  set(ZP_HAVE_PYTHON TRUE)
  set(zp_python_dir "${ZP_PYTHON_DIR}")
  if(zp_python_dir STREQUAL "" AND CMAKE_INSTALL_PREFIX STREQUAL "/usr")
    set(zp_python_dir lib/python3/dist-packages)
  elseif(zp_python_dir STREQUAL "")
    execute_process(
      COMMAND /usr/bin/python3 -c "import sys; print(f'python3.{sys.version_info.minor}')"
      OUTPUT_VARIABLE zp_python OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
      message(FATAL_ERROR "python/zpipe_worker: /usr/bin/python3 cannot say its version "
                          "(install python3, or set ZP_PYTHON_DIR)")
    endif()
    set(zp_python_dir lib/${zp_python}/dist-packages)
  endif()
  message(STATUS "zpipe_worker goes to ${zp_python_dir}")
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/python/zpipe_worker
          DESTINATION ${zp_python_dir} COMPONENT python
          PATTERN __pycache__ EXCLUDE PATTERN *.pyc EXCLUDE)
endif()

# ---- /usr/share/doc/PACKAGE ----------------------------------------------

# copyright, in Debian's machine-readable format, from LICENSE.
file(READ ${PROJECT_SOURCE_DIR}/LICENSE zp_license)
if(NOT zp_license MATCHES "Copyright \\(c\\) ([^\n]+)\n+(Permission is hereby granted.*)$")
  message(FATAL_ERROR "LICENSE: not the MIT license text that cmake/package.cmake reads")
endif()
set(zp_notice "${CMAKE_MATCH_1}")
string(STRIP "${CMAKE_MATCH_2}" zp_license)
string(REPLACE "\n\n" "\n.\n" zp_license "${zp_license}")
string(REPLACE "\n" "\n " zp_license "${zp_license}")
file(WRITE ${ZP_DEB_STAGE}/copyright
"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: zpipe

Files: *
Copyright: ${zp_notice}
License: Expat
 ${zp_license}
")

# changelog.Debian: one entry per version of CHANGELOG.md, newest first,
# each pointing at changelog.gz. The package's own version comes first even
# when CHANGELOG.md has no section for it yet (a development build).
function(zp_deb_entry out version text date)
  execute_process(COMMAND date -u -R -d ${date} OUTPUT_VARIABLE rfc_date
                  OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "date -d ${date}: ${rc}")
  endif()
  string(CONCAT entry "zpipe (${version}) unstable; urgency=medium\n\n  * ${text}\n\n"
                      " -- ${ZP_DEB_MAINTAINER}  ${rfc_date}\n\n")
  set(${out} "${${out}}${entry}" PARENT_SCOPE)
endfunction()
file(STRINGS ${PROJECT_SOURCE_DIR}/CHANGELOG.md zp_headings
     REGEX "^## \\[[0-9]+\\.[0-9]+\\.[0-9]+\\] - [0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]$")
set(zp_changelog "")
if(NOT zp_headings MATCHES "\\[${PROJECT_VERSION}\\]")
  message(WARNING "CHANGELOG.md has no section for ${PROJECT_VERSION}")
  string(TIMESTAMP zp_today "%Y-%m-%d" UTC)
  zp_deb_entry(zp_changelog ${ZP_DEB_VERSION}
               "Development build of ${PROJECT_VERSION}." ${zp_today})
endif()
foreach(h IN LISTS zp_headings)
  string(REGEX REPLACE "^## \\[([0-9.]+)\\] - (.*)$" "\\1;\\2" h "${h}")
  list(GET h 0 v)
  list(GET h 1 d)
  zp_deb_entry(zp_changelog ${v}-${ZP_DEB_RELEASE}
               "Upstream release ${v}: see changelog.gz." ${d})
endforeach()
string(STRIP "${zp_changelog}" zp_changelog)
file(WRITE ${ZP_DEB_STAGE}/changelog.Debian "${zp_changelog}\n")
zp_gzip(${ZP_DEB_STAGE}/changelog.Debian ${ZP_DEB_STAGE}/changelog.Debian.gz)
zp_gzip(${PROJECT_SOURCE_DIR}/CHANGELOG.md ${ZP_DEB_STAGE}/changelog.gz)

set(ZP_DEB_COMPONENTS runtime dev cli)
if(ZP_HAVE_PYTHON)
  list(APPEND ZP_DEB_COMPONENTS python)
endif()
# Every install rule must belong to a package: one without COMPONENT (CMake
# calls it "Unspecified") or with another name would install files that no
# package holds. This file is included last, after every install rule.
get_cmake_property(zp_components COMPONENTS)
list(JOIN ZP_DEB_COMPONENTS ", " zp_names)
foreach(c IN LISTS zp_components)
  if(NOT c IN_LIST ZP_DEB_COMPONENTS)
    message(FATAL_ERROR "An install rule has the component '${c}', which no Debian "
                        "package takes: give it one of ${zp_names} (cmake/package.cmake).")
  endif()
endforeach()
set(CPACK_DEBIAN_RUNTIME_PACKAGE_NAME libzpipe${PROJECT_VERSION_MAJOR})
set(CPACK_DEBIAN_DEV_PACKAGE_NAME libzpipe-dev)
set(CPACK_DEBIAN_CLI_PACKAGE_NAME zpipe)
set(CPACK_DEBIAN_PYTHON_PACKAGE_NAME python3-zpipe-worker)
foreach(c IN LISTS ZP_DEB_COMPONENTS)
  string(TOUPPER ${c} C)
  install(FILES ${ZP_DEB_STAGE}/copyright ${ZP_DEB_STAGE}/changelog.Debian.gz
                ${ZP_DEB_STAGE}/changelog.gz
          DESTINATION ${ZP_DEB_DOC_DIR}/${CPACK_DEBIAN_${C}_PACKAGE_NAME}
          COMPONENT ${c} EXCLUDE_FROM_ALL)
endforeach()

# ---- CPack ------------------------------------------------------------------

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME zpipe)
set(CPACK_PACKAGE_VENDOR "the zpipe authors")
set(CPACK_PACKAGE_CONTACT "${ZP_DEB_MAINTAINER}")
set(CPACK_STRIP_FILES ON)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_INSTALL_DEFAULT_DIRECTORY_PERMISSIONS
    OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
set(CPACK_COMPONENTS_ALL ${ZP_DEB_COMPONENTS})
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE ${ZP_DEB_RELEASE})
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${ZP_DEB_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# A shlibs file for every library with a SONAME: libzpipe0's only.
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY ">=")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

string(CONCAT zp_about
    "zpipe runs pipelines of C tasks whose stages work at the same time, on\n"
    "threads, libuv event loops, child processes or remote machines, with\n"
    "msgpack items carried over ZeroMQ through bounded queues.")

set(CPACK_DEBIAN_RUNTIME_PACKAGE_SECTION libs)
string(CONCAT CPACK_DEBIAN_RUNTIME_DESCRIPTION
    "concurrent and distributed data pipelines in C - library\n${zp_about}\n\n"
    "This package holds the shared library.")
set(CPACK_DEBIAN_RUNTIME_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/cmake/debian/runtime/triggers)

# zpipe.h includes msgpack.h; zpipe.pc and zpipeConfig.cmake need the
# pkg-config modules of the four libraries, and pkg-config itself.
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
string(CONCAT CPACK_DEBIAN_DEV_DESCRIPTION
    "concurrent and distributed data pipelines in C - development files\n${zp_about}\n\n"
    "This package holds the header, the static library, zpipe.pc and the\n"
    "CMake package (find_package(zpipe)).")
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS
    "${CPACK_DEBIAN_RUNTIME_PACKAGE_NAME} (= ${ZP_DEB_VERSION}), libmsgpack-dev, libzmq3-dev, libuv1-dev, libmicrohttpd-dev, pkgconf | pkg-config")

set(CPACK_DEBIAN_CLI_PACKAGE_SECTION utils)
string(CONCAT CPACK_DEBIAN_CLI_DESCRIPTION
    "concurrent and distributed data pipelines in C - command\n${zp_about}\n\n"
    "This package holds the zpipe command, which runs pipelines written as\n"
    "one-line specs with tasks from plugins, serves remote stages as a worker\n"
    "and makes CURVE keys, and zpipe-examples, an example plugin.")

set(CPACK_DEBIAN_PYTHON_PACKAGE_SECTION python)
set(CPACK_DEBIAN_PYTHON_PACKAGE_ARCHITECTURE all)
string(CONCAT CPACK_DEBIAN_PYTHON_DESCRIPTION
    "concurrent and distributed data pipelines in C - Python worker\n${zp_about}\n\n"
    "This package holds zpipe_worker (python3 -m zpipe_worker), a worker that\n"
    "serves tasks written in Python to the remote stages of a zpipe run.")
set(CPACK_DEBIAN_PYTHON_PACKAGE_DEPENDS "python3, python3-zmq, python3-msgpack")
set(CPACK_DEBIAN_PYTHON_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/cmake/debian/python/postinst
    ${PROJECT_SOURCE_DIR}/cmake/debian/python/prerm)

include(CPack)
