# SPDX-License-Identifier: MIT
#
# Install rules: the public header, the shared and static libraries, the zpipe
# CLI, a CMake package (find_package(zpipe) gives zpipe::zpipe and zpipe::zpipe_static) and
# a pkg-config file. Included last from the top-level CMakeLists.txt, after the
# zpipe and zpipe_static targets exist. It must never install a private header:
# include/zpipe.h, with the zpipe_version.h that the build writes for it, is
# the whole public interface.
# tests/consumer/run.sh installs into a temporary prefix and builds against it.
#
# Every rule names its component, one per Debian package (cmake/package.cmake):
# runtime (libzpipe0: the shared library), dev (libzpipe-dev: header, static
# library, the .so link, zpipe.pc, the CMake package) and cli (zpipe: the
# command, its plugins, its manual page).

include(CMakePackageConfigHelpers)

set(ZP_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/zpipe)
set(ZP_PC_DIR ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

install(FILES ${PROJECT_SOURCE_DIR}/include/zpipe.h
              ${PROJECT_BINARY_DIR}/include/zpipe_version.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT dev)

# The include directory reaches importers through the targets'
# $<INSTALL_INTERFACE:...> include path, so no INCLUDES DESTINATION here.
install(TARGETS zpipe zpipe_static
        EXPORT zpipeTargets
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
          COMPONENT runtime NAMELINK_COMPONENT dev
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev)

# The zpipe CLI; the example plugin installs itself (examples/CMakeLists.txt).
install(TARGETS zpipe_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT cli)

# The exported link interfaces name PkgConfig::MSGPACK (both libraries) and,
# for the static one, $<LINK_ONLY:PkgConfig::ZMQ / JANSSON / UV / MHD /
# Threads::Threads>.
# zpipeConfig.cmake recreates those targets before it loads this file.
install(EXPORT zpipeTargets
        NAMESPACE zpipe::
        FILE zpipeTargets.cmake
        DESTINATION ${ZP_CMAKE_DIR} COMPONENT dev)

configure_package_config_file(
    ${PROJECT_SOURCE_DIR}/cmake/zpipeConfig.cmake.in
    ${PROJECT_BINARY_DIR}/cmake/zpipeConfig.cmake
    INSTALL_DESTINATION ${ZP_CMAKE_DIR})
write_basic_package_version_file(
    ${PROJECT_BINARY_DIR}/cmake/zpipeConfigVersion.cmake
    VERSION ${PROJECT_VERSION}
    COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/cmake/zpipeConfig.cmake
              ${PROJECT_BINARY_DIR}/cmake/zpipeConfigVersion.cmake
        DESTINATION ${ZP_CMAKE_DIR} COMPONENT dev)

# zpipe.pc is written in two passes so that it names the prefix actually
# installed to, which `cmake --install --prefix DIR` may change after
# configuration. Pass one, now, fills in everything but the prefix and leaves
# the literal @CMAKE_INSTALL_PREFIX@ behind; pass two runs at install time,
# when CMAKE_INSTALL_PREFIX holds the final prefix (without any DESTDIR).
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
    set(ZP_PC_LIBDIR "${CMAKE_INSTALL_LIBDIR}")
else()
    set(ZP_PC_LIBDIR "\${exec_prefix}/${CMAKE_INSTALL_LIBDIR}")
endif()
if(IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
    set(ZP_PC_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
else()
    set(ZP_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
set(ZP_PC_PREFIX "@CMAKE_INSTALL_PREFIX@")
configure_file(${PROJECT_SOURCE_DIR}/cmake/zpipe.pc.in
               ${PROJECT_BINARY_DIR}/cmake/zpipe.pc.stage @ONLY)
install(CODE "configure_file(\"${PROJECT_BINARY_DIR}/cmake/zpipe.pc.stage\"
                             \"${PROJECT_BINARY_DIR}/cmake/zpipe.pc\" @ONLY)"
        COMPONENT dev)
install(FILES ${PROJECT_BINARY_DIR}/cmake/zpipe.pc
        DESTINATION ${ZP_PC_DIR} COMPONENT dev)
